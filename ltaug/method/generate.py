"""Stage generate: fused latents to images, directly (s = 0) or after the last s of N denoising steps.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Sec. 3.3: the decoded fused vector z_F = D(z_F^s) may lie
off the VAE's manifold; a few steps of the Stable Diffusion UNet, conditioned on the sample's
class names with classifier-free guidance, pull it back before the VAE decodes it. The names are
those of the tail image (the paper: "the class names associated with the tail class image";
``generate.prompt_labels: tail``) or the fused sample's labels (``fused``: with union labels,
the head neighbour's findings too). With the
scheduler set to N steps, only the last s = N/d of them are run (Table 1 reports s = 0, 1, 5
of N = 75), img2img style: z_F is first noised to the first of those timesteps. The authors'
code denoises z_F without adding noise; ``generate.add_noise: false`` does that.

Every image comes out of :func:`ltaug.backbone.latents.decode_latents` and every denoising out of
:func:`ltaug.backbone.diffusion.sample_latents`, the sampler the text-to-image baseline uses too. The
noise of fused sample i is drawn from its own generator seeded by (generate.seed, stream("generate.noise"), i), so a
set does not depend on the batch size.

Output ``results/synthetic/<variant>@{s}/``, in the layout every synthetic set shares, written by
:class:`ltaug.data.synthetic.SyntheticSetWriter`:
    manifest.csv  dicom_id (<variant>@{s}-<tail class>-<i>), the provenance columns tail_class,
                  tail_id, head_id, head_class, tail_share (share of positions from the tail
                  vector), steps, fused_id (the row of results/fused/<variant>/latents.zarr), then path
                  (images/<id>.png) and one 0/1 column per class in classes.json order
    images/       8-bit RGB PNGs as the VAE decodes them
    set.json      method, n_per_class, classes, tail, provenance_columns, and how it was made
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ltaug.backbone.diffusion import check_prompt_template, prompt, sample_latents, torch_dtype
from ltaug.backbone.latents import decode_latents, open_latents, to_rgb_pixels
from ltaug.backbone.model_dir import fingerprint, load_stable_diffusion, load_vae
from ltaug.common.config import config_section
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.seeds import seed64, stream
from ltaug.data.image_store import ImageStores
from ltaug.data.synthetic import SyntheticSetWriter, read_synthetic_set

PROVENANCE_COLUMNS = ["tail_class", "tail_id", "head_id", "head_class", "tail_share", "steps", "fused_id"]


@config_section("generate")
@dataclass(frozen=True)
class GenerateConfig:
    steps: list[int] = field(default_factory=lambda: [0, 1, 5])  # one set ours@{s} per value; s = 0: VAE decode only
    num_steps: int = 75  # N: scheduler steps of which the last s are run
    guidance_scale: float = 3.5  # classifier-free guidance scale of every UNet step
    add_noise: bool = True  # noise z_F to the first of the last s timesteps (img2img); false: denoise z_F as is
    seed: int = 0  # seed of the per-sample noise (sample i draws from its own generator)
    batch_size: int = 32  # latents per UNet and VAE pass
    prompt_template: str = "{classes}"  # the UNet's prompt; {classes} = the sample's class names ("nodule, fracture")
    prompt_labels: str = "tail"  # whose classes the prompt names: tail (the tail image's, the paper) | fused (the sample's labels)
    composite: str = "none"  # none: the decoded image | head: its tail positions over the head image's real pixels | paste: the tail image's real pixels there (no model)
    feather: float = 4.0  # composite: Gaussian sigma, in pixels, of the mask's edge

    def __post_init__(self) -> None:  # types and ranges: the schema (ltaug.common.config.config_section)
        check_prompt_template(self.prompt_template)
        if max(self.steps) > self.num_steps:
            raise ConfigError(
                f"generate.steps: {max(self.steps)} is more than generate.num_steps = {self.num_steps}; the denoising "
                f"runs the last s of num_steps scheduler steps, so every s must be <= num_steps."
            )


def composite(
    decoded: np.ndarray, from_tail: np.ndarray, head: np.ndarray, tail: np.ndarray | None, how: str, feather: float
) -> np.ndarray:  # fmt: skip
    """(B, H, W, 3) uint8 images put together in pixel space from the fused mask F (B, h, w) upsampled to (H, W) and
    blurred by a Gaussian of ``feather`` pixels (alpha in [0, 1]): head, alpha * decoded + (1 - alpha) * head pixels
    (the generated tail region in the head neighbour's real image); paste, alpha * tail + (1 - alpha) * head pixels
    (the tail image's real region, no model: the copy-paste control); none, the decoded images as they are."""
    if how == "none":
        return decoded
    from scipy import ndimage

    b, height, width = decoded.shape[:3]
    factor = height // from_tail.shape[1]
    alpha = np.kron(from_tail.astype(np.float32), np.ones((factor, factor), dtype=np.float32))  # (B, H, W)
    if feather > 0:
        alpha = np.stack([ndimage.gaussian_filter(a, feather) for a in alpha])
    inside = (tail if how == "paste" else decoded).astype(np.float32)  # paste needs the tail pixels, head does not
    out = alpha[..., None] * inside + (1 - alpha[..., None]) * head.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def sample_seed(seed: int, index: int) -> int:
    """The noise seed of fused sample ``index``."""
    return seed64(seed, stream("generate.noise"), index)


def generate_set(
    fused_store: str | Path,
    model_dir: str | Path,
    outdir: str | Path,
    steps: int,
    cfg: GenerateConfig,
    device: torch.device,
    dtype: str = "float32",
    variant: str = "",
    method: str | None = None,
    stores: ImageStores | None = None,
) -> pd.DataFrame:
    """Stage generate: the synthetic set ``method`` (<variant>@<steps>, default ours@<steps>) of the fused latents,
    written atomically; returns its manifest.

    ``dtype`` and ``variant`` are diffusion.dtype and diffusion.variant (which weight files to read); ``stores``
    (the image stores of decode_images) give the real training images a composite (``cfg.composite``) is made with."""
    if not isinstance(steps, int) or not 0 <= steps <= cfg.num_steps:
        raise ConfigError(f"generate.steps: {steps!r} is not an integer in 0..generate.num_steps ({cfg.num_steps}).")
    group = open_latents(fused_store, expect={"model_fingerprint": fingerprint(model_dir)})
    attrs = dict(group.attrs)
    classes, tail = list(attrs["classes"]), list(attrs.get("tail", []))
    n_per_class = int(attrs.get("config", {}).get("n_per_class", 0))
    if "tail_class" not in group:
        raise InputError(f"{fused_store}: no provenance arrays (tail_class, ...); expected the store fuse writes.")
    n = group["z"].shape[0]
    counts = pd.Series(group["tail_class"][:].astype(object)).value_counts()
    wrong = {t: int(counts.get(t, 0)) for t in tail if counts.get(t, 0) != n_per_class}
    if wrong:
        raise InputError(
            f"{fused_store}: expected {n_per_class} fused samples per tail class (fusion.n_per_class), found {wrong}; "
            f"rerun fuse."
        )
    if steps == 0:  # the UNet and text encoder are not needed
        sd, vae = None, load_vae(model_dir, device, variant)
    else:
        sd = load_stable_diffusion(model_dir, device, torch_dtype(dtype, device), variant)
        vae = sd.vae
    info = {"steps": steps, "label_policy": attrs.get("config", {}).get("label_policy"), "model_path": str(model_dir),
            "model_fingerprint": attrs.get("model_fingerprint"), "fused_store": str(fused_store)}  # fmt: skip
    if steps:
        info |= {"num_steps": cfg.num_steps, "guidance_scale": cfg.guidance_scale, "add_noise": cfg.add_noise,
                 "seed": cfg.seed, "prompt_template": cfg.prompt_template, "prompt_labels": cfg.prompt_labels}  # fmt: skip
    method = method or f"ours@{steps}"
    if cfg.composite != "none":
        if stores is None:
            raise ConfigError(f"generate.composite: {cfg.composite} puts real pixels together with the decoded ones; "
                              f"the stage needs the image stores (--images).")  # fmt: skip
        info |= {"composite": cfg.composite, "feather": cfg.feather}
    prompt_source = "tail_labels" if cfg.prompt_labels == "tail" else "labels"
    if steps and prompt_source not in group:
        raise InputError(f"{fused_store}: no {prompt_source} array, which generate.prompt_labels: {cfg.prompt_labels} "
                         f"reads; rerun fuse.")  # fmt: skip
    with SyntheticSetWriter(outdir, method, classes, tail, n_per_class, info) as writer:
        bar = tqdm(total=n, desc=f"generate {method}", unit="img", file=sys.stderr, mininterval=5.0)
        for a in range(0, n, cfg.batch_size):
            b = min(a + cfg.batch_size, n)
            z = torch.from_numpy(group["z"][a:b])  # (B, C, h, w), z_F
            labels = group["labels"][a:b]  # (B, K)
            if sd is not None:
                generators = [torch.Generator(sd.device).manual_seed(sample_seed(cfg.seed, i)) for i in range(a, b)]
                prompts = [prompt(row, classes, cfg.prompt_template) for row in group[prompt_source][a:b]]
                z = sample_latents(sd, prompts, cfg.num_steps, cfg.guidance_scale, generators,
                                   z_start=z, last_steps=steps, add_noise=cfg.add_noise)  # fmt: skip
            images = decode_latents(vae, z, batch_size=cfg.batch_size)  # (B, H, W, 3) uint8
            if cfg.composite != "none":
                size = images.shape[1]
                roles = ("head_id", "tail_id") if cfg.composite == "paste" else ("head_id",)  # head: no tail pixels
                real = {role: to_rgb_pixels(stores.read_ids("train", group[role][a:b], size)) for role in roles}
                images = composite(images, group["from_tail"][a:b], real["head_id"], real.get("tail_id"), cfg.composite,
                                   cfg.feather)  # fmt: skip
            provenance = pd.DataFrame({name: group[name][a:b].astype(object) for name in PROVENANCE_COLUMNS[:4]})
            provenance["tail_share"] = group["tail_share"][a:b].round(6)
            provenance["steps"] = steps
            provenance["fused_id"] = group["ids"][a:b].astype(object)
            writer.add(images, provenance[PROVENANCE_COLUMNS], labels)
            bar.update(b - a)
        bar.close()
    return read_synthetic_set(outdir, classes, tail, n_per_class).frame
