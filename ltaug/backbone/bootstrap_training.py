"""The demo model's training loops: the VAE on reconstruction + KL with contrast-weighted pixels, the UNet and text encoder on
the epsilon-prediction DDPM loss with min-SNR weighting; both draw class-balanced batches."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from ltaug.backbone import bootstrap_models as nets  # the networks, tokenizer, prompts and saved directory
from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.common.precision import resolve_precision, training_autocast
from ltaug.common.sampling import balanced_indices
from ltaug.common.schedule import warmup_cosine_schedule


def to_pixels(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 1, S, S) -> float (B, 3, S, S) in [-1, 1]: grayscale as RGB, since SD VAEs are 3-channel."""
    return (images.to(device).float() / 127.5 - 1).expand(-1, 3, -1, -1).contiguous()


def _optimizer(params, lr: float, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on the warm-up and cosine schedule (:mod:`ltaug.common.schedule`)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    return opt, warmup_cosine_schedule(opt, steps)


def _progress(steps: int, desc: str) -> tqdm:
    return tqdm(total=steps, desc=desc, file=sys.stderr, mininterval=10, unit="step", dynamic_ncols=False)


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
    precision = resolve_precision(cfg.vae_precision, device, "diffusion.bootstrap.vae_precision")
    print(f"VAE training passes in {precision} on {device}", file=sys.stderr)
    with _progress(cfg.vae_steps, "VAE") as bar:
        for _ in range(cfg.vae_steps):
            idx = balanced_indices(labels, cfg.vae_batch_size, cfg.vae_balance, generator)
            batch = images[idx] if not cfg.vae_crop_size else random_crops(images[idx], cfg.vae_crop_size, generator)
            x = to_pixels(batch, device).contiguous(memory_format=torch.channels_last)
            with training_autocast(precision, device):
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


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (B, ...) on the [0, 255] scale."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))
