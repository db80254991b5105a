"""The demo model's hyper-parameters (config section diffusion.bootstrap): its networks' sizes and their training."""

from __future__ import annotations

from dataclasses import dataclass


from ltaug.common.config import THREADS, config_section
from ltaug.common.errors import ConfigError


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
    vae_precision: str = "auto"  # auto | float32 | bfloat16: autocast of the VAE's training passes (ltaug.common.precision)
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

    def __post_init__(self) -> None:  # types and ranges: the schema (ltaug.common.config.config_section)
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
