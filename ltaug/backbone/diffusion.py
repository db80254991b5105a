"""The Stable Diffusion backbone: the device choice, class-name prompts and the one sampler.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705) work in the latent space of a pre-trained Stable
Diffusion VAE (RoentGen for chest X-rays, Sec. 3), decode fused latents with it and
optionally pull them back onto the VAE manifold with a few UNet denoising steps
conditioned on the class names (Sec. 3.3); the text-to-image baseline samples it from
the class-name prompt alone (RoentGen@75, Table 1).

The model is always a diffusers Stable Diffusion directory (``model_index.json`` plus
``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), loaded from local
files only: RoentGen or any SD 1.x fine-tune when ``diffusion.pretrained`` is set, else
the small model :mod:`ltaug.backbone.bootstrap` trains on the demo images. Nothing is downloaded.
Checking and loading such a directory is :mod:`ltaug.backbone.model_dir`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import diffusers
import numpy as np
import torch
from transformers import CLIPTextModel

from ltaug.backbone.model_dir import StableDiffusion
from ltaug.common.config import config_section
from ltaug.common.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@config_section("diffusion")
@dataclass(frozen=True)
class DiffusionConfig:
    pretrained: str = ""  # local diffusers Stable Diffusion directory (e.g. RoentGen); "" = the bootstrapped demo model
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | float16 | bfloat16 (half precision only on CUDA)
    variant: str = ""  # weights variant to read, e.g. fp16 (files *.fp16.safetensors); "" = the plain files


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for ``diffusion.device``: auto picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ConfigError(f"diffusion.device: {name!r} is not a device name ({exc}); use auto, cpu, cuda or cuda:N.")
        if not torch.cuda.is_available():
            raise ConfigError(
                f"diffusion.device: {name!r} asks for CUDA, but this machine has no usable CUDA device "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); set diffusion.device to auto or cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"diffusion.device: {name!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}, or auto."
            )
        return device
    raise ConfigError(f"diffusion.device: {name!r} is not one of auto, cpu, cuda, cuda:N.")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for ``diffusion.dtype`` on ``device``; half precision needs CUDA."""
    if name not in DTYPES:
        raise ConfigError(f"diffusion.dtype: {name!r} is not one of {', '.join(DTYPES)}.")
    if name != "float32" and device.type != "cuda":
        raise ConfigError(
            f"diffusion.dtype: {name} runs only on CUDA, but the device is {device}; "
            f"set diffusion.dtype to float32 (or run on a CUDA device)."
        )
    return DTYPES[name]


def check_prompt_template(template: str, key: str = "generate.prompt_template") -> str:
    """``template`` if it holds the field {classes} once and no other field, else ConfigError."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{key}: {template!r} is not a format string ({exc}); write e.g. 'chest x-ray showing {{classes}}'.")
    if fields != ["classes"]:
        raise ConfigError(
            f"{key}: {template!r} must hold the field {{classes}} exactly once and no other field (found "
            f"{fields or 'none'}); write e.g. 'chest x-ray showing {{classes}}'; literal braces are written {{{{ }}}}."
        )
    return template


def prompt(labels_row: Sequence[int] | np.ndarray, classes: Sequence[str], template: str = "{classes}") -> str:
    """The class-name prompt of one sample: positive classes, lower case, in manifest order, in ``template``.

    ``prompt([1, 0, 1], ["Cardiomegaly", "Edema", "Nodule"]) == "cardiomegaly, nodule"``, and with the
    template ``"chest x-ray showing {classes}"`` "chest x-ray showing cardiomegaly, nodule" (for models
    trained on report sentences, such as RoentGen); an all-zero row gives "" whatever the template
    (the unconditional prompt of classifier-free guidance).
    """
    labels_row = np.asarray(labels_row)
    if labels_row.shape != (len(classes),):
        raise ValueError(f"labels row of shape {labels_row.shape} does not match {len(classes)} classes")
    names = ", ".join(c.lower() for c, y in zip(classes, labels_row) if y)
    return template.format(classes=names) if names else ""


def encode_prompts(tokenizer, text_encoder: CLIPTextModel, prompts: Sequence[str]) -> torch.Tensor:
    """(B, L, D) text-encoder hidden states for the UNet's cross-attention, as SD 1.x computes them.

    Prompts are padded (and truncated) to the tokenizer's ``model_max_length``; no attention
    mask is passed to the encoder, as in SD 1.x.
    """
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def partial_schedule(scheduler, num_steps: int, last_steps: int, device: torch.device | None = None):
    """(a fresh scheduler, its timesteps) for the last ``last_steps`` of ``num_steps`` steps: exactly one UNet
    evaluation per step, whatever the model ships.

    A scheduler of ``num_steps`` steps lists its timesteps from noisiest to cleanest; the last s
    steps start at the s-th timestep from the end. For one-evaluation-per-step schedulers (DDIM,
    Euler, DPM-Solver++ multistep, and any of them with v-prediction) those are the last s
    entries, and the scheduler is told where it starts (``set_begin_index``, as diffusers'
    img2img does), so that its sigmas and multistep history begin there. PNDM, as SD 1.x ships
    it (``skip_prk_steps``), lists N + 1 timesteps, and a PLMS run started mid-way spends two
    evaluations on its first step; the last s steps then run as DDIM steps of the same noise
    schedule (the same betas, timesteps and offset), the deterministic first-order solver of the
    same ODE. Schedulers that evaluate the UNet more than once a step (``order`` > 1: Heun,
    KDPM2) are refused: Ours@s counts UNet evaluations.
    """
    if isinstance(scheduler, diffusers.PNDMScheduler):
        scheduler = diffusers.DDIMScheduler.from_config(scheduler.config)
    else:
        scheduler = type(scheduler).from_config(scheduler.config)
    if scheduler.order != 1:
        raise ConfigError(
            f"generate.steps: the model's {type(scheduler).__name__} evaluates the UNet {scheduler.order} times a step, "
            f"so the last s steps would cost {scheduler.order} x s evaluations; give the model a one-evaluation scheduler "
            f"(DDIMScheduler, EulerDiscreteScheduler or DPMSolverMultistepScheduler in scheduler/scheduler_config.json)."
        )
    scheduler.set_timesteps(num_steps, device=device)
    if len(scheduler.timesteps) != num_steps:
        raise ConfigError(f"{type(scheduler).__name__} lists {len(scheduler.timesteps)} timesteps for {num_steps} steps; "
                          f"its last steps are not defined one UNet evaluation each.")  # fmt: skip
    start = num_steps - last_steps
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler, scheduler.timesteps[start:]


@torch.no_grad()
def sample_latents(
    sd: StableDiffusion,
    prompts: Sequence[str],
    num_steps: int,
    guidance: float,
    generator: torch.Generator | None,
    z_start: torch.Tensor | None = None,
    last_steps: int | None = None,
    add_noise: bool = True,
) -> torch.Tensor:
    """(B, 4, h, w) float32 scaled latents from the UNet with classifier-free guidance; the one sampler.

    Text-to-image (``z_start`` None): pure noise through all ``num_steps`` scheduler steps
    (RoentGen@75 in Table 1 is ``num_steps=75``). Denoising a given latent (``z_start``, Sec.
    3.3 "N/d" steps): the scheduler is set to ``num_steps`` steps and only the last
    ``last_steps`` of them are run, starting from ``z_start`` noised to the first of those
    timesteps (``scheduler.add_noise``, as diffusers' img2img does with strength
    last_steps / num_steps), or from ``z_start`` itself when ``add_noise`` is False: exactly
    ``last_steps`` UNet evaluations (each on the doubled guidance batch) for every scheduler
    (:func:`partial_schedule`). ``last_steps=0`` returns ``z_start`` unchanged.

    eps = eps(z, "") + guidance * (eps(z, prompt) - eps(z, "")) (Ho & Salimans 2022); guidance 1
    is the conditional model alone. DDIM steps use eta = 0. ``sd.scheduler`` is left untouched;
    ``generator`` (on ``sd.device``) makes the draw reproducible.
    """
    n = len(prompts)
    shape = (n, sd.unet.config.in_channels, sd.latent_size, sd.latent_size)
    if z_start is None:
        scheduler = type(sd.scheduler).from_config(sd.scheduler.config)
        scheduler.set_timesteps(num_steps, device=sd.device)
        timesteps = scheduler.timesteps
        z = diffusers.utils.torch_utils.randn_tensor(shape, generator=generator, device=sd.device, dtype=sd.dtype)
        z = z * scheduler.init_noise_sigma
    else:
        if last_steps is None or not 0 <= last_steps <= num_steps:
            raise ValueError(f"last_steps must be in 0..{num_steps} when z_start is given, not {last_steps!r}")
        if z_start.shape[0] != n:
            raise ValueError(f"{z_start.shape[0]} start latents but {n} prompts")
        z = z_start.to(device=sd.device, dtype=sd.dtype)
        if last_steps == 0:
            return z.float()
        scheduler, timesteps = partial_schedule(sd.scheduler, num_steps, last_steps, sd.device)
        if add_noise:
            noise = diffusers.utils.torch_utils.randn_tensor(
                tuple(z.shape), generator=generator, device=sd.device, dtype=sd.dtype
            )
            z = scheduler.add_noise(z, noise, timesteps[:1].repeat(n))
    hidden = encode_prompts(sd.tokenizer, sd.text_encoder, ["" for _ in prompts] + list(prompts))  # (2B, L, D)
    step_kwargs = {"eta": 0.0} if "eta" in inspect.signature(scheduler.step).parameters else {}  # DDIM
    for t in timesteps:
        zin = scheduler.scale_model_input(torch.cat([z, z]), t)  # (2B, 4, h, w)
        uncond, cond = sd.unet(zin, t, encoder_hidden_states=hidden).sample.chunk(2)
        out = uncond + guidance * (cond - uncond)  # eps, or v for a v-prediction model: guidance is linear in both
        z = scheduler.step(out, t, z, **step_kwargs).prev_sample
    return z.float()
