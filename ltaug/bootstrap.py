"""Stages bootstrap_vae and bootstrap_unet: train a small Stable Diffusion-format model on the training images.

Elberg, Parra, Petrache (arXiv 2405.01705) build on RoentGen, a Stable Diffusion model
fine-tuned on chest X-rays: its VAE gives the latent space in which iterated learning and
feature fusion happen (Sec. 3), its UNet the optional class-conditioned denoising of fused
latents (Sec. 3.3) and the text-to-image baseline (Table 1). When ``diffusion.pretrained``
is empty this stage trains a stand-in of the same format, so the demo and the tests run the
same loading code (:func:`ltaug.model_dir.load_stable_diffusion`) as real runs:

1. an ``AutoencoderKL`` with SD's geometry (8x downsampling, 4 latent channels) on the
   reconstruction loss plus a small KL term (as in LDM), whose ``scaling_factor`` is then set
   to 1 / std of the training latents, as SD's 0.18215 was;
2. a ``UNet2DConditionModel`` on the scaled latents with the epsilon-prediction DDPM loss,
   conditioned through a small ``CLIPTextModel`` (trained with it, from scratch) on the
   class-name prompt (:func:`ltaug.diffusion.prompt`), read by a word-level tokenizer over
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from PIL import Image
from tqdm import tqdm
from transformers import AutoTokenizer, CLIPTextModel, PreTrainedTokenizerFast

from ltaug import bootstrap_models as nets  # the networks, tokenizer, prompts and saved directory
from ltaug.config import THREADS, config_section
from ltaug.data import class_columns, read_manifest
from ltaug.diffusion import sample_latents
from ltaug.errors import ConfigError, InputError
from ltaug.image_store import ImageStores, read_images
from ltaug.io import atomic_path
from ltaug.latents import decode_latents
from ltaug.model_dir import fingerprint, load_stable_diffusion, load_vae
from ltaug.sampling import balanced_indices
from ltaug.schedule import warmup_cosine_schedule


@config_section("diffusion.bootstrap", extra={
    "image_size": {"type": "integer", "minimum": 32, "multipleOf": 8,
                   "description": "latents.image_size, set by the rule; the VAE downsamples by 8, so e.g. 64 or 128"},
    "threads": THREADS,
})  # fmt: skip
@dataclass(frozen=True)
class BootstrapConfig:
    seed: int = 0  # the same seed and config give the same model (on the same device and threads)
    image_size: int = 128  # images are resized (shorter side) and centre-cropped to this; a multiple of 8
    threads: int = 2  # torch CPU threads
    # VAE (AutoencoderKL, 4 down blocks = 3 downsamples = 8x, 4 latent channels)
    vae_channels: tuple[int, ...] = (16, 16, 32, 64)  # block_out_channels of the 4 encoder/decoder blocks
    vae_layers_per_block: int = 1  # resnets per encoder block (the decoder has one more)
    vae_norm_groups: int = 8  # GroupNorm groups; divides every vae_channels entry
    vae_steps: int = 1100  # optimiser steps
    vae_batch_size: int = 4  # images per step
    vae_lr: float = 4e-3  # peak AdamW learning rate (warm-up, then cosine decay)
    vae_kl_weight: float = 1e-6  # KL weight relative to the pixel-summed reconstruction loss (LDM's 1e-6)
    vae_detail_weight: float = 10.0  # pixel weight 1 + this * |x - 5x5 local mean of x|: thin findings count more
    vae_edge_weight: float = 0.0  # weight of the L1 error of the image's horizontal and vertical differences (sharp lines)
    vae_balance: float = 1.0  # class balancing of VAE batches: 0 = image frequency, 1 = every class equally often
    vae_crop_size: int = 0  # side of the random crops the VAE trains on, on the latent grid (0 = whole images)
    vae_precision: str = "float32"  # float32 | bfloat16 (autocast of the VAE's training passes; weights stay float32)
    # UNet + text encoder
    unet_channels: tuple[int, ...] = (32, 64, 128)  # block_out_channels, one level each; latents are image_size / 8
    unet_cross_attention: tuple[bool, ...] = (False, True, True)  # per level: cross-attention blocks (SD: all)
    unet_layers_per_block: int = 1  # resnets (+ transformer) per down block
    unet_attention_heads: int = 8  # heads of every attention layer (diffusers' legacy `attention_head_dim`)
    unet_norm_groups: int = 32  # GroupNorm groups; divides every unet_channels entry
    text_hidden_size: int = 64  # CLIPTextModel width = the UNet's cross_attention_dim
    text_layers: int = 2  # CLIPTextModel transformer layers
    text_heads: int = 4  # CLIPTextModel attention heads; divides text_hidden_size
    text_embedding_std: float = 1.0  # init std of the word embeddings (CLIP's 0.02 hides the words behind noise)
    max_prompt_tokens: int = 32  # tokenizer model_max_length (bos + words + commas + eos)
    unet_steps: int = 1100  # optimiser steps
    unet_batch_size: int = 16  # latents per step
    unet_lr: float = 4e-3  # peak AdamW learning rate (warm-up, then cosine decay)
    unet_snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0 = plain DDPM loss
    unet_balance: float = 1.0  # class balancing of UNet batches (as vae_balance)
    empty_prompt_share: float = 0.15  # share of training prompts replaced by "" for classifier-free guidance
    # sample grids written after training
    sample_steps: int = 25  # DDIM steps
    guidance_scale: float = 4.0  # classifier-free guidance scale
    samples_per_class: int = 8  # images per class grid
    reconstruction_images: int = 8  # val images shown in reconstructions.png

    def __post_init__(self) -> None:  # types and ranges: the schema (ltaug.config.config_section)
        for name in ("vae_channels", "unet_channels", "unet_cross_attention"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.unet_cross_attention) != len(self.unet_channels):
            raise ConfigError(
                f"diffusion.bootstrap.unet_cross_attention: {len(self.unet_cross_attention)} entries, but "
                f"diffusion.bootstrap.unet_channels has {len(self.unet_channels)} levels; give one flag per level."
            )
        for chans, groups in (("vae_channels", "vae_norm_groups"), ("unet_channels", "unet_norm_groups")):
            bad = [c for c in getattr(self, chans) if c % getattr(self, groups)]
            if bad:
                raise ConfigError(
                    f"diffusion.bootstrap.{groups}: {getattr(self, groups)} does not divide {bad} of "
                    f"diffusion.bootstrap.{chans} (GroupNorm needs it); change one of the two."
                )
        if self.vae_crop_size > self.image_size:
            raise ConfigError(
                f"diffusion.bootstrap.vae_crop_size: {self.vae_crop_size} is larger than the images "
                f"(latents.image_size {self.image_size}); give at most {self.image_size}, or 0 for whole images."
            )
        bad = [c for c in self.unet_channels if c % self.unet_attention_heads]
        if bad:
            raise ConfigError(
                f"diffusion.bootstrap.unet_attention_heads: {self.unet_attention_heads} does not divide {bad} of "
                f"diffusion.bootstrap.unet_channels (each head gets an equal share of the channels)."
            )
        if self.text_hidden_size % self.text_heads:
            raise ConfigError(
                f"diffusion.bootstrap.text_heads: {self.text_heads} does not divide "
                f"diffusion.bootstrap.text_hidden_size ({self.text_hidden_size})."
            )


# ---------------------------------------------------------------------------- data


def load_images(rows: pd.DataFrame, image_size: int, images: ImageStores | None, source: str) -> torch.Tensor:
    """(N, 1, S, S) uint8 grayscale of the manifest rows ``rows``: the pixels encode_latents encodes, from the
    image stores of decode_images (None: the files, :func:`ltaug.images.load_image`)."""
    return torch.from_numpy(read_images(rows, image_size, images, source)[:, None])


def to_pixels(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 1, S, S) -> float (B, 3, S, S) in [-1, 1]: grayscale as RGB, since SD VAEs are 3-channel."""
    return (images.to(device).float() / 127.5 - 1).expand(-1, 3, -1, -1).contiguous()


def _optimizer(params, lr: float, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on the warm-up and cosine schedule (:mod:`ltaug.schedule`)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return opt, warmup_cosine_schedule(opt, steps)


def _progress(steps: int, desc: str) -> tqdm:
    return tqdm(total=steps, desc=desc, file=sys.stderr, mininterval=10, unit="step", dynamic_ncols=False)


# ---------------------------------------------------------------------------- training


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, cfg: BootstrapConfig, generator: torch.Generator) -> torch.Tensor:
    """Detail-weighted L1 + MSE reconstruction of a sampled latent, plus the KL term (LDM's weighting)."""
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator=generator)  # (B, 4, S/8, S/8)
    d = vae.decode(z).sample.float() - x  # (B, 3, S, S); float32 under a bfloat16 autocast too
    gray = x[:, :1]
    weight = 1 + cfg.vae_detail_weight * (gray - F.avg_pool2d(gray, 5, 1, 2, count_include_pad=False)).abs()
    reconstruction = (weight * d.abs()).mean() + (weight * d.square()).mean()
    if cfg.vae_edge_weight > 0:  # a blurred thin line keeps its mean but loses its gradients: penalise those
        dx, dy = d[..., :, 1:] - d[..., :, :-1], d[..., 1:, :] - d[..., :-1, :]
        reconstruction = reconstruction + cfg.vae_edge_weight * (dx.abs().mean() + dy.abs().mean())
    kl = posterior.kl().mean() / x[0].numel()  # per pixel, so kl_weight is relative to the summed loss
    return reconstruction + cfg.vae_kl_weight * kl


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One (size x size) crop of each (B, C, S, S) image, its corner on the 8-pixel latent grid.

    Aligned corners keep a crop's latent cells those of the whole image, so the VAE learns the
    same grid it encodes with.
    """
    corners = torch.randint(0, (images.shape[-1] - size) // 8 + 1, (len(images), 2), generator=generator) * 8
    return torch.stack([im[..., y : y + size, x : x + size] for im, (y, x) in zip(images, corners.tolist())])


def train_vae(
    vae: AutoencoderKL, images: torch.Tensor, labels: np.ndarray, cfg: BootstrapConfig, device: torch.device
) -> list[float]:
    """Train in place on uint8 (N, 1, S, S) images; return the loss of every step."""
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    vae.to(device, memory_format=torch.channels_last).train()  # ~20 % faster convolutions on CPU
    opt, schedule = _optimizer(vae.parameters(), cfg.vae_lr, cfg.vae_steps)
    losses = []
    with _progress(cfg.vae_steps, "VAE") as bar:
        for _ in range(cfg.vae_steps):
            idx = balanced_indices(labels, cfg.vae_batch_size, cfg.vae_balance, generator)
            batch = images[idx] if not cfg.vae_crop_size else random_crops(images[idx], cfg.vae_crop_size, generator)
            x = to_pixels(batch, device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.vae_precision == "bfloat16"):
                loss = vae_loss(vae, x, cfg, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
            bar.update()
    vae.to(memory_format=torch.contiguous_format).eval()
    return losses


@torch.no_grad()
def encode_mean_latents(vae: AutoencoderKL, images: torch.Tensor, device: torch.device, batch: int = 50) -> torch.Tensor:
    """(N, 4, S/8, S/8) posterior means of uint8 (N, 1, S, S) images, unscaled, on the CPU."""
    vae.eval()
    return torch.cat(
        [vae.encode(to_pixels(images[i : i + batch], device)).latent_dist.mode().cpu() for i in range(0, len(images), batch)]
    )


def train_unet(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: PreTrainedTokenizerFast,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    labels: np.ndarray,
    classes: Sequence[str],
    cfg: BootstrapConfig,
    device: torch.device,
) -> list[float]:
    """Train UNet and text encoder in place on scaled latents (N, 4, h, w); return the loss of every step.

    DDPM epsilon-prediction loss (Ho et al. 2020, Eq. 14, as SD): x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps,
    each sample weighted by min(SNR_t, gamma) / SNR_t (min-SNR-gamma, Hang et al. 2023), which
    converges several times faster than the plain loss; gamma 0 turns the weighting off.
    """
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    unet.to(device).train()
    text_encoder.to(device).train()
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt, schedule = _optimizer(params, cfg.unet_lr, cfg.unet_steps)
    ids = {}  # prompt -> token ids, tokenized once
    alphas_cumprod = scheduler.alphas_cumprod.to(device)

    def token_ids(prompts: list[str]) -> torch.Tensor:
        for p in set(prompts) - set(ids):
            ids[p] = tokenizer(p, padding="max_length", max_length=cfg.max_prompt_tokens, return_tensors="pt").input_ids[0]
        return torch.stack([ids[p] for p in prompts]).to(device)

    losses = []
    with _progress(cfg.unet_steps, "UNet") as bar:
        for _ in range(cfg.unet_steps):
            idx = balanced_indices(labels, cfg.unet_batch_size, cfg.unet_balance, generator)
            prompts = nets.training_prompts(labels[idx.numpy()], classes, cfg.empty_prompt_share, generator)
            z0 = latents[idx].to(device)  # (B, 4, h, w)
            noise = torch.randn(z0.shape, generator=generator).to(device)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=generator).to(device)
            zt = scheduler.add_noise(z0, noise, t)
            hidden = text_encoder(token_ids(prompts))[0]  # (B, L, D)
            error = (unet(zt, t, encoder_hidden_states=hidden).sample - noise).square().mean(dim=(1, 2, 3))  # (B,)
            if cfg.unet_snr_gamma > 0:
                snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])  # SNR_t = abar_t / (1 - abar_t)
                error = error * snr.clamp(max=cfg.unet_snr_gamma) / snr
            loss = error.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
            bar.update()
    unet.eval()
    text_encoder.eval()
    return losses


# ---------------------------------------------------------------------------- metrics and grids


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (B, ...) on the [0, 255] scale."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


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
    (:func:`ltaug.bootstrap_models.save_vae_stage`): encoding, iterated learning, CAMs,
    fusion, ours@0 and SMOTE read it and run while the UNet trains, and it has the finished
    model's fingerprint. ``latents_file`` gets the scaled posterior means of the training
    images (N, 4, h, w), float32 in manifest order, which the UNet trains on;
    ``outdir_samples`` ``reconstructions.png`` (val originals above their reconstructions by
    the saved VAE) and ``metrics.json`` (val PSNR, losses, wall time per phase), also returned.
    """
    torch.set_num_threads(cfg.threads)
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
    torch.set_num_threads(cfg.threads)
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
            generator = torch.Generator(device).manual_seed(cfg.seed + 1000 + i)
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
