"""Tiny models for the tests: an untrained Stable Diffusion directory, an IL model, classes and a CAM store."""

from __future__ import annotations

from pathlib import Path

import torch

from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.bootstrap_models import (
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    save_model,
)
from ltaug.backbone.latents import open_latents
from ltaug.data.classes import ClassSplit
from ltaug.method.cam import CamConfig, cam_maps
from ltaug.method.checkpoint import checkpoint, save_checkpoint
from ltaug.method.iterated import ILConfig, build_model

CLASSES = ["Cardiomegaly", "Pleural Effusion", "Nodule", "Fracture", "No Finding"]
SPLIT = ClassSplit(
    classes=CLASSES, head=["Cardiomegaly", "Pleural Effusion"], tail=["Nodule", "Fracture"], medium=["No Finding"],
    train_counts={}, prevalence={}, n={},
)  # fmt: skip
TINY_IL = ILConfig(
    embed_channels=8, student_width=8, student_depth=1, decoder_width=8, decoder_depth=1,
    classifier_width=8, classifier_depth=2, threads=1,
)  # fmt: skip
FINGERPRINT = "f" * 64  # the model_fingerprint helpers.data.write_latent_store records by default


def save_tiny_sd(path: Path, cfg: BootstrapConfig, classes: list[str], seed: int = 0) -> Path:
    """An untrained Stable Diffusion directory of ``cfg``'s sizes (seeded), as the bootstrap writes it."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(classes, cfg.max_prompt_tokens)
    save_model(path, build_vae(cfg), build_unet(cfg), build_text_encoder(cfg, tokenizer), tokenizer, build_scheduler())
    return path


def save_tiny_il(path: Path, seed: int = 0, latent_shape=(4, 8, 8), fingerprint: str = FINGERPRINT, **il) -> Path:
    """An untrained IL checkpoint (random weights, seeded) as train_il writes it, for latents of ``fingerprint``;
    ``il`` overrides TINY_IL's fields."""
    cfg = ILConfig(**{**TINY_IL.identity(), "seed": seed, "threads": 1, **il})
    model = build_model(cfg, latent_shape, len(CLASSES)).eval()
    attrs = {"model_fingerprint": fingerprint, "classes": CLASSES}
    data = {"train": attrs | {"n": 0}, "val": attrs | {"n": 0}, "head": SPLIT.head, "tail": SPLIT.tail}
    save_checkpoint(checkpoint(model, cfg, data, cfg.generations, [], latent_shape, SPLIT), path)
    return path


def cam_store_for(latents: Path, model: Path, out: Path, **cfg) -> Path:
    """The CAM store of a latent store, as cam_maps writes it, on the CPU; EigenCAM at ``features``
    (one map per sample) unless ``cfg`` says otherwise."""
    cfg = {"method": "eigencam", "target_layer": "features", **cfg}
    cam_maps(latents, model, out, CamConfig(**cfg), torch.device("cpu"))
    assert open_latents(latents)["z"].shape[0] > 0
    return out
