"""The demo model's networks, built from BootstrapConfig, and the diffusers directory they are saved as.

An ``AutoencoderKL`` with Stable Diffusion's geometry (4 blocks, 3 downsamples = 8x, 4 latent
channels), a ``UNet2DConditionModel`` conditioned through a small ``CLIPTextModel`` read by a
word-level tokenizer over the class names, and SD 1.x's ``DDIMScheduler``; :func:`save_model` (or :func:`save_vae_stage`, then
:func:`save_unet_stage`) writes them in the layout :func:`ltaug.backbone.model_dir.load_stable_diffusion` reads (the hub's).
Also the class-name prompts the text encoder is trained on, and the check that they fit
the tokenizer. Training is ltaug.backbone.bootstrap.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.diffusion import prompt
from ltaug.backbone.model_dir import fingerprint, weight_variant
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.io import atomic_path


NO_FINDING_PROMPT = "no finding"  # training prompt of an image without any positive class


SPECIAL_TOKENS = ("<pad>", "<bos>", "<unk>", "<eos>")  # ids 0..3 (eos is not 2: see CLIPTextTransformer)


# ---------------------------------------------------------------------------- networks


def build_tokenizer(classes: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer whose vocabulary is the words of the class names (lower case) and ','.

    No vocabulary is downloaded; a word outside the class names maps to <unk>.
    """
    pre = pre_tokenizers.Whitespace()  # words (\\w+) and runs of punctuation
    words: list[str] = []
    for text in (*classes, NO_FINDING_PROMPT, ","):
        words += [w for w, _ in pre.pre_tokenize_str(text.lower()) if w not in words and w not in SPECIAL_TOKENS]
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", unk_token="<unk>", eos_token="<eos>",
        model_max_length=max_length,
    )  # fmt: skip


def build_vae(cfg: BootstrapConfig) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=cfg.vae_channels,
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=4,
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=cfg.image_size,
    )


def build_text_encoder(cfg: BootstrapConfig, tokenizer: PreTrainedTokenizerFast) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden_size,
        intermediate_size=2 * cfg.text_hidden_size,
        projection_dim=cfg.text_hidden_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_prompt_tokens,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = CLIPTextModel(config)
    if cfg.text_embedding_std > 0:
        # CLIP's init (std 0.02) makes every class name's hidden states nearly alike, and the
        # UNet then learns to ignore the prompt; unit-scale word embeddings keep them apart.
        torch.nn.init.normal_(model.get_input_embeddings().weight, std=cfg.text_embedding_std)
    return model


def build_unet(cfg: BootstrapConfig) -> UNet2DConditionModel:
    """SD's UNet, smaller; cross-attention only where ``unet_cross_attention`` says (SD 1.x: all but the last)."""
    attn = cfg.unet_cross_attention
    return UNet2DConditionModel(
        sample_size=cfg.image_size // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        attention_head_dim=cfg.unet_attention_heads,  # diffusers' legacy name: it sets the number of heads
        norm_num_groups=cfg.unet_norm_groups,
        cross_attention_dim=cfg.text_hidden_size,
    )


def build_scheduler() -> DDIMScheduler:
    """SD 1.x's noise schedule (scaled_linear 0.00085..0.012 over 1000 steps) with DDIM sampling."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def _write_model(root: Path, vae, unet, text_encoder, tokenizer, scheduler, weights: bool) -> None:
    """A diffusers Stable Diffusion directory at ``root``; ``weights=False`` keeps the UNet's and text
    encoder's configs only: what their save_pretrained writes, less the weight files (transformers
    adds keys such as ``architectures`` to the config as it saves a model, not a config)."""
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", type(text_encoder).__name__],
        "tokenizer": ["transformers", type(tokenizer).__name__],
        "unet": ["diffusers", type(unet).__name__],
        "vae": ["diffusers", type(vae).__name__],
    }
    root.mkdir()
    vae.save_pretrained(root / "vae")
    unet.save_pretrained(root / "unet")
    text_encoder.save_pretrained(root / "text_encoder")
    if not weights:
        for file in [*(root / "unet").iterdir(), *(root / "text_encoder").iterdir()]:
            if weight_variant(file.name) is not None:
                file.unlink()
    tokenizer.save_pretrained(root / "tokenizer")
    scheduler.save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def save_model(outdir: str | Path, vae, unet, text_encoder, tokenizer, scheduler) -> None:
    """Write a diffusers Stable Diffusion directory atomically (temporary sibling, renamed when complete)."""
    with atomic_path(outdir) as tmp:
        _write_model(tmp, vae, unet, text_encoder, tokenizer, scheduler, weights=True)


def save_vae_stage(outdir: str | Path, vae, unet, text_encoder, tokenizer, scheduler) -> None:
    """The VAE stage's directory, atomically: a diffusers Stable Diffusion directory whose UNet and text
    encoder hold their configs but no weights.

    Every config and the tokenizer are those of the finished model (:func:`save_unet_stage` adds
    only weights), so the directory has the finished model's fingerprint
    (:func:`ltaug.backbone.model_dir.fingerprint`) and the latents encoded with it match that model;
    :func:`ltaug.backbone.model_dir.load_vae` reads it, and loading its UNet says the weights are missing.
    """
    with atomic_path(outdir) as tmp:
        _write_model(tmp, vae, unet, text_encoder, tokenizer, scheduler, weights=False)


def save_unet_stage(outdir: str | Path, vae_dir: str | Path, unet, text_encoder) -> None:
    """The finished model, atomically: a copy of the VAE stage's directory with the trained UNet and text
    encoder saved into it. Its fingerprint must be the VAE stage's (the latents of every VAE-only
    stage were encoded under it); a difference is an error, and nothing is written."""
    with atomic_path(outdir) as tmp:
        shutil.copytree(vae_dir, tmp)
        unet.save_pretrained(tmp / "unet")
        text_encoder.save_pretrained(tmp / "text_encoder")
        if fingerprint(tmp) != fingerprint(vae_dir):
            raise InputError(
                f"{vae_dir}: the UNet or text encoder saved with other configs than this VAE stage's directory "
                f"holds (diffusion.bootstrap changed between the two stages?); rerun bootstrap_vae and bootstrap_unet."
            )


# ---------------------------------------------------------------------------- prompts


def training_prompts(
    labels: np.ndarray, classes: Sequence[str], empty_share: float, generator: torch.Generator
) -> list[str]:
    """One prompt per row: its class names (:func:`prompt`, "no finding" for an all-zero row), or "" with
    probability ``empty_share`` (the unconditional prompt for classifier-free guidance)."""
    drop = torch.rand(len(labels), generator=generator) < empty_share
    return ["" if d else (prompt(row, classes) or NO_FINDING_PROMPT) for row, d in zip(labels, drop.tolist())]


def check_prompt_lengths(tokenizer: PreTrainedTokenizerFast, labels: np.ndarray, classes: Sequence[str]) -> None:
    """No training prompt may be truncated (its last classes would be silently dropped)."""
    longest = max({prompt(row, classes) or NO_FINDING_PROMPT for row in labels}, key=lambda p: len(tokenizer(p).input_ids))
    n = len(tokenizer(longest).input_ids)
    if n > tokenizer.model_max_length:
        raise ConfigError(
            f"diffusion.bootstrap.max_prompt_tokens: the training prompt {longest!r} has {n} tokens, more than "
            f"{tokenizer.model_max_length}; raise diffusion.bootstrap.max_prompt_tokens to at least {n}."
        )
