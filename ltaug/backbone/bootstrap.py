"""Stages bootstrap_vae and bootstrap_unet: train a small Stable Diffusion-format model on the training images.

Elberg, Parra, Petrache (arXiv 2405.01705) build on RoentGen, a Stable Diffusion model
fine-tuned on chest X-rays: its VAE gives the latent space in which iterated learning and
feature fusion happen (Sec. 3), its UNet the optional class-conditioned denoising of fused
latents (Sec. 3.3) and the text-to-image baseline (Table 1). When ``diffusion.pretrained``
is empty this stage trains a stand-in of the same format, so the demo and the tests run the
same loading code (:func:`ltaug.backbone.model_dir.load_stable_diffusion`) as real runs:

1. an ``AutoencoderKL`` with SD's geometry (8x downsampling, 4 latent channels) on the
   reconstruction loss plus a small KL term (as in LDM), whose ``scaling_factor`` is then set
   to 1 / std of the training latents, as SD's 0.18215 was;
2. a ``UNet2DConditionModel`` on the scaled latents with the epsilon-prediction DDPM loss,
   conditioned through a small ``CLIPTextModel`` (trained with it, from scratch) on the
   class-name prompt (:func:`ltaug.backbone.diffusion.prompt`), read by a word-level tokenizer over
   the class names; a share of empty prompts makes classifier-free guidance possible;
3. SD 1.x's ``DDIMScheduler``.

Phase 1 is rule bootstrap_vae, phases 2-3 rule bootstrap_unet; the VAE stage's directory has the
finished model's configs and fingerprint, so the stages that need only the VAE run while the UNet
trains (:func:`bootstrap_diffusion` runs both, one after the other).

Tail classes have a few dozen training images, so both phases draw batches class-balanced
(:func:`balanced_indices`); the VAE loss weighs pixels by local contrast so that the small,
thin findings (nodule, fracture line, calcified arc) are not averaged away.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler
from PIL import Image
from tqdm import tqdm
from transformers import AutoTokenizer

from ltaug.backbone import bootstrap_models as nets  # the networks, tokenizer, prompts and saved directory
from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.bootstrap_training import encode_mean_latents, psnr, train_unet, train_vae
from ltaug.backbone.diffusion import sample_latents
from ltaug.backbone.latents import decode_latents
from ltaug.backbone.model_dir import fingerprint, load_stable_diffusion, load_vae
from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.common.seeds import seed64, stream
from ltaug.data.image_store import ImageStores, read_images
from ltaug.data.manifest import class_columns, read_manifest


# ---------------------------------------------------------------------------- data


def load_images(rows: pd.DataFrame, image_size: int, images: ImageStores | None, source: str) -> torch.Tensor:
    """(N, 1, S, S) uint8 grayscale of the manifest rows ``rows``: the pixels encode_latents encodes, from the
    image stores of decode_images (None: the files, :func:`ltaug.common.images.load_image`)."""
    return torch.from_numpy(read_images(rows, image_size, images, source)[:, None])


# ---------------------------------------------------------------------------- training


# ---------------------------------------------------------------------------- metrics and grids


def _grid(images: np.ndarray, cols: int) -> Image.Image:
    """(B, H, W, 3) uint8 -> one image, ``cols`` per row, 2 px black gaps."""
    b, h, w, _ = images.shape
    rows = math.ceil(b / cols)
    canvas = np.zeros((rows * (h + 2) - 2, cols * (w + 2) - 2, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = im
    return Image.fromarray(canvas)


def _summary(losses: list[float], points: int = 20) -> list[list[float]]:
    """[step, mean loss] over ``points`` equal windows: the training curve, compactly."""
    edges = np.linspace(0, len(losses), min(points, len(losses)) + 1).astype(int)
    return [[int(hi), round(float(np.mean(losses[lo:hi])), 5)] for lo, hi in zip(edges[:-1], edges[1:])]


# ---------------------------------------------------------------------------- stage


class _Laps:
    """Wall time per phase of a stage, printed as each phase ends."""

    def __init__(self, stage: str) -> None:
        self.stage, self.wall = stage, {}
        self.start = self.tick = time.perf_counter()

    def __call__(self, name: str) -> None:
        self.wall[name] = round(time.perf_counter() - self.tick, 2)
        self.tick = time.perf_counter()
        print(f"{self.stage}: {name} done in {self.wall[name]:.1f} s", file=sys.stderr)

    def total(self) -> dict:
        return {**self.wall, "total": round(time.perf_counter() - self.start, 2)}


def _split_rows(manifest_csv: str | Path, splits: Sequence[str]) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """The manifest's classes and its rows of each of ``splits``; an empty split is an InputError."""
    manifest = read_manifest(manifest_csv)
    classes = class_columns(manifest)
    frames = {split: manifest[manifest["split"] == split] for split in splits}
    for split, frame in frames.items():
        if len(frame) == 0:
            raise InputError(f"{manifest_csv}: no {split} images; the bootstrap trains on train and reports on val.")
    return classes, frames


def bootstrap_vae(
    manifest_csv: str | Path,
    outdir_vae: str | Path,
    latents_file: str | Path,
    outdir_samples: str | Path,
    cfg: BootstrapConfig,
    device: torch.device,
    stores: ImageStores | None = None,
) -> dict:
    """Stage bootstrap_vae: train the VAE on the training split; write what the UNet stage and the VAE-only stages read.

    Images come from ``stores`` (the image stores of decode_images at cfg.image_size, the pixels the
    VAE will encode; None: the files).
    ``outdir_vae`` gets the model directory's layout with the VAE's weights only
    (:func:`ltaug.backbone.bootstrap_models.save_vae_stage`): encoding, iterated learning, CAMs,
    fusion, ours@0 and SMOTE read it and run while the UNet trains, and it has the finished
    model's fingerprint. ``latents_file`` gets the scaled posterior means of the training
    images (N, 4, h, w), float32 in manifest order, which the UNet trains on;
    ``outdir_samples`` ``reconstructions.png`` (val originals above their reconstructions by
    the saved VAE) and ``metrics.json`` (val PSNR, losses, wall time per phase), also returned.
    """
    lap = _Laps("bootstrap_vae")
    classes, frames = _split_rows(manifest_csv, ("train", "val"))
    train, val = frames["train"], frames["val"]
    labels = train[classes].to_numpy()
    tokenizer = nets.build_tokenizer(classes, cfg.max_prompt_tokens)
    nets.check_prompt_lengths(tokenizer, labels, classes)
    images = load_images(train, cfg.image_size, stores, str(manifest_csv))
    val_images = load_images(val, cfg.image_size, stores, str(manifest_csv))
    lap("load")

    torch.manual_seed(cfg.seed)
    vae = nets.build_vae(cfg)
    vae_losses = train_vae(vae, images, labels, cfg, device)
    lap("vae")

    latents = encode_mean_latents(vae, images, device)  # (N, 4, h, w), unscaled
    scaling_factor = 1.0 / latents.std().item()  # as SD's 0.18215: unit-variance latents for the UNet
    vae.register_to_config(scaling_factor=scaling_factor)
    lap("latents")

    # untrained: only their configs are written, the UNet stage builds them again from the same seed
    text_encoder, unet = nets.build_text_encoder(cfg, tokenizer), nets.build_unet(cfg)
    with atomic_path(latents_file) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, (latents * scaling_factor).numpy().astype(np.float32))
    nets.save_vae_stage(outdir_vae, vae.cpu(), unet, text_encoder, tokenizer, nets.build_scheduler())
    lap("save")

    saved = load_vae(outdir_vae, device)  # the reconstructions show the VAE as saved
    val_latents = encode_mean_latents(saved, val_images, device) * scaling_factor
    reconstructed = decode_latents(saved, val_latents)  # (N, S, S, 3)
    originals = val_images[:, 0, :, :, None].expand(-1, -1, -1, 3).numpy()
    val_psnr = psnr(reconstructed, originals)
    with atomic_path(outdir_samples) as tmp:
        tmp.mkdir()
        k = min(cfg.reconstruction_images, len(val_images))
        _grid(np.concatenate([originals[:k], reconstructed[:k]]), cols=k).save(tmp / "reconstructions.png")
        lap("reconstructions")
        metrics = {
            "vae": str(outdir_vae),
            "fingerprint": fingerprint(outdir_vae),
            "device": str(device),
            "threads": cfg.threads,
            "n_train": len(train),
            "n_val": len(val),
            "scaling_factor": scaling_factor,
            "val_psnr_db": round(float(val_psnr.mean()), 3),
            "val_psnr_min_db": round(float(val_psnr.min()), 3),
            "final_loss": {"vae": round(float(np.mean(vae_losses[-50:])), 5)},
            "losses": {"vae": _summary(vae_losses)},
            "wall_s": lap.total(),
            "config": asdict(cfg),
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def bootstrap_unet(
    manifest_csv: str | Path,
    vae_dir: str | Path,
    latents_file: str | Path,
    vae_samples: str | Path,
    outdir_model: str | Path,
    outdir_samples: str | Path,
    cfg: BootstrapConfig,
    device: torch.device,
) -> dict:
    """Stage bootstrap_unet: train UNet and text encoder on the VAE stage's latents; write the whole model.

    ``outdir_model`` gets the diffusers directory: the VAE stage's directory with the UNet's and
    text encoder's weights added, so its fingerprint is the VAE stage's (checked).
    ``outdir_samples`` gets one text-to-image grid per class (``{class}.png``) and
    ``metrics.json``: the VAE stage's metrics (``vae_samples/metrics.json``) with the UNet's
    losses and wall times added, also returned.
    """
    lap = _Laps("bootstrap_unet")
    classes, frames = _split_rows(manifest_csv, ("train",))
    labels = frames["train"][classes].to_numpy()
    vae_metrics = json.loads((Path(vae_samples) / "metrics.json").read_text())
    latents = torch.from_numpy(np.load(latents_file))  # (N, 4, h, w), scaled
    if len(latents) != len(labels):
        raise InputError(
            f"{latents_file}: {len(latents)} latents, but {manifest_csv} has {len(labels)} training images; "
            f"rerun bootstrap_vae on this manifest."
        )
    tokenizer = AutoTokenizer.from_pretrained(vae_dir, subfolder="tokenizer", local_files_only=True)
    scheduler = DDIMScheduler.from_pretrained(vae_dir, subfolder="scheduler", local_files_only=True)
    lap("load")

    torch.manual_seed(cfg.seed)
    text_encoder, unet = nets.build_text_encoder(cfg, tokenizer), nets.build_unet(cfg)
    unet_losses = train_unet(unet, text_encoder, tokenizer, scheduler, latents, labels, classes, cfg, device)
    lap("unet")

    nets.save_unet_stage(outdir_model, vae_dir, unet.cpu(), text_encoder.cpu())
    lap("save")

    sd = load_stable_diffusion(outdir_model, device)  # the grids show the model as saved
    with atomic_path(outdir_samples) as tmp:
        tmp.mkdir()
        for i, name in enumerate(tqdm(classes, desc="grids", file=sys.stderr, mininterval=10)):
            generator = torch.Generator(device).manual_seed(seed64(cfg.seed, stream("bootstrap.grids"), i))
            z = sample_latents(sd, [name.lower()] * cfg.samples_per_class, cfg.sample_steps, cfg.guidance_scale, generator)
            _grid(decode_latents(sd.vae, z), cols=min(cfg.samples_per_class, 8)).save(tmp / f"{name.replace(' ', '_')}.png")
        lap("samples")
        metrics = {
            **vae_metrics,
            "model": str(outdir_model),
            "fingerprint": sd.fingerprint,
            "threads": {"vae": vae_metrics["threads"], "unet": cfg.threads},
            "final_loss": {**vae_metrics["final_loss"], "unet": round(float(np.mean(unet_losses[-50:])), 5)},
            "losses": {**vae_metrics["losses"], "unet": _summary(unet_losses)},
            "wall_s": {"vae_stage": vae_metrics["wall_s"], "unet_stage": lap.total()},
            "config": asdict(cfg),
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def bootstrap_diffusion(
    manifest_csv: str | Path, outdir: str | Path, cfg: BootstrapConfig, device: torch.device
) -> dict:
    """Both stages one after the other into ``outdir`` (as the workflow lays them out: ``vae/``,
    ``train_latents.npy``, ``vae_samples/``, ``model/``, ``samples/``); returns the UNet stage's metrics."""
    root = Path(outdir)
    parts = {name: root / name for name in ("vae", "train_latents.npy", "vae_samples", "model", "samples")}
    bootstrap_vae(manifest_csv, parts["vae"], parts["train_latents.npy"], parts["vae_samples"], cfg, device)
    return bootstrap_unet(manifest_csv, parts["vae"], parts["train_latents.npy"], parts["vae_samples"],
                          parts["model"], parts["samples"], cfg, device)  # fmt: skip
