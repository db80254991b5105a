"""A diffusers Stable Diffusion directory on disk: its check, its fingerprint, and the one loader.

The layout the hub writes for SD 1.x / 2.x and RoentGen: ``model_index.json`` plus ``vae/``,
``unet/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/`` (extra entries such as
safety_checker or feature_extractor are ignored), weights as ``.safetensors`` or ``.bin``,
optionally in a variant (``*.fp16.safetensors``). Everything is read from local files only;
a directory that lacks a part is an InputError naming it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextModel

from ltaug.common.errors import InputError

COMPONENTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


# The file that marks each component folder as present (the tokenizer has several layouts).
CONFIG_FILES = {
    "vae": ("config.json",),
    "unet": ("config.json",),
    "text_encoder": ("config.json",),
    "tokenizer": ("tokenizer_config.json", "tokenizer.json", "vocab.json"),
    "scheduler": ("scheduler_config.json",),
}


@dataclass
class StableDiffusion:
    """The loaded components of one diffusers Stable Diffusion directory, in eval mode.

    ``unet`` and ``text_encoder`` are on the requested device and dtype; ``vae`` is on the
    device in float32 whatever the dtype (SD-family VAEs overflow in float16 when decoding,
    which is why diffusers upcasts them too; the VAE is a small share of the compute), so
    feed it float32 pixels or latents.
    """

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: object  # a transformers tokenizer: CLIPTokenizer(Fast) or a word-level PreTrainedTokenizerFast
    scheduler: object  # a diffusers scheduler (DDIMScheduler, PNDMScheduler, ...)
    path: str  # the directory it was loaded from
    fingerprint: str  # see fingerprint()

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def latent_size(self) -> int:
        """Side of the UNet's native latent (image side / 8)."""
        return int(self.unet.config.sample_size)


def _component_config(root: Path, name: str) -> Path | None:
    for file in CONFIG_FILES[name]:
        if (root / name / file).is_file():
            return root / name / file
    return None


def check_model_dir(path: str | Path) -> Path:
    """Raise InputError unless ``path`` is a diffusers SD directory with every one of COMPONENTS."""
    root = Path(path)
    if not root.exists():
        raise InputError(
            f"{root}: the Stable Diffusion model directory does not exist. Set diffusion.pretrained to a "
            f"local diffusers Stable Diffusion directory (e.g. RoentGen), or leave it empty to bootstrap "
            f"the demo model."
        )
    if not (root / "model_index.json").is_file():
        raise InputError(
            f"{root}: not a diffusers directory (no model_index.json). diffusion.pretrained must point at "
            f"the folder that holds model_index.json and the {', '.join(COMPONENTS)} subfolders "
            f"(save a pipeline with save_pretrained, or use a RoentGen/SD 1.x snapshot as distributed)."
        )
    missing = [name for name in COMPONENTS if _component_config(root, name) is None]
    if missing:
        expected = "; ".join(f"{n}/{' or '.join(CONFIG_FILES[n])}" for n in missing)
        raise InputError(
            f"{root}: component(s) {', '.join(missing)} missing (expected {expected}). A Stable Diffusion "
            f"directory needs all of {', '.join(COMPONENTS)}; copy the complete model, or fix diffusion.pretrained."
        )
    return root


def fingerprint(path: str | Path) -> str:
    """sha256 over model_index.json, every component's config and the tokenizer files; never reads weights.

    Cheap enough to compute on every run; it changes when an architecture, the scheduler or
    the vocabulary changes (a retrained model with the same configs keeps its fingerprint).
    """
    root = check_model_dir(path)
    files = [root / "model_index.json"]
    files += [root / name / "config.json" for name in ("vae", "unet", "text_encoder")]
    files += [root / "scheduler" / "scheduler_config.json"]
    files += sorted(p for p in (root / "tokenizer").iterdir() if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        if file.is_file():
            digest.update(str(file.relative_to(root)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def _scheduler_class(root: Path):
    config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    name = config.get("_class_name")
    if name is None:
        index = json.loads((root / "model_index.json").read_text())
        name = (index.get("scheduler") or [None, None])[1]
    cls = getattr(diffusers, name or "", None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise InputError(
            f"{root / 'scheduler' / 'scheduler_config.json'}: scheduler class {name!r} is not a diffusers "
            f"scheduler (diffusers {diffusers.__version__}); set _class_name to e.g. DDIMScheduler."
        )
    return cls


def weight_variant(name: str) -> str | None:
    """The variant of a weights file name ("" for the plain files), None if it is not a weights file.

    Names as diffusers and transformers write them: ``diffusion_pytorch_model.safetensors`` -> "",
    ``model.fp16.safetensors`` -> "fp16", shards ``diffusion_pytorch_model.fp16-00001-of-00002.safetensors``
    -> "fp16", shard indexes ``model.safetensors.index.json`` -> "", ``model.safetensors.index.fp16.json`` -> "fp16".
    """
    parts = name.split(".")
    if parts[-1] in ("safetensors", "bin"):
        middle = parts[1:-1]
    elif len(parts) >= 4 and parts[1] in ("safetensors", "bin") and parts[2] == "index" and parts[-1] == "json":
        middle = parts[3:-1]
    else:
        return None
    return middle[0].split("-")[0] if middle else ""


def check_weights(root: Path, component: str, variant: str = "") -> None:
    """Raise InputError unless ``root/component`` holds weights of ``variant`` ("" = the plain files).

    Hub snapshots often hold only some of the files (an fp16-only download, or .bin without
    .safetensors); the error says which were found and which setting reads them.
    """
    folder = root / component
    found = {f.name: weight_variant(f.name) for f in sorted(folder.iterdir()) if f.is_file()}
    found = {name: v for name, v in found.items() if v is not None}
    if variant in found.values():
        return
    listing = ", ".join(found) or "no .safetensors or .bin file"
    others = sorted({v for v in found.values() if v != variant})
    if not others:
        fix = "copy the component's weights into it (save_pretrained writes them)"
    elif others == [""]:
        fix = "set diffusion.variant to \"\" to read the plain files"
    else:
        fix = f"set diffusion.variant to {[v for v in others if v][0]!r}"
    wanted = f"weights of variant {variant!r} (diffusion.variant)" if variant else "plain weights file"
    raise InputError(f"{folder}: no {wanted}; found {listing}. {fix[0].upper()}{fix[1:]}.")


def _variant(variant: str) -> dict:
    return {"variant": variant} if variant else {}


def load_vae(path: str | Path, device: torch.device, variant: str = "") -> AutoencoderKL:
    """Only the VAE of a checked SD directory, in float32 (SD VAEs overflow in float16), eval mode.

    ``variant`` reads e.g. the fp16 files of a hub snapshot (upcast to float32)."""
    root = check_model_dir(path)
    check_weights(root, "vae", variant)
    try:
        vae = AutoencoderKL.from_pretrained(
            root, subfolder="vae", torch_dtype=torch.float32, local_files_only=True, low_cpu_mem_usage=False,
            **_variant(variant),
        )  # fmt: skip
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{root}/vae: cannot load the VAE ({type(exc).__name__}: {exc}).") from exc
    return vae.to(device, memory_format=torch.channels_last).eval()  # the same values; encoding ~1.4x faster on CPU


def load_stable_diffusion(
    path: str | Path, device: torch.device, dtype: torch.dtype = torch.float32, variant: str = ""
) -> StableDiffusion:
    """Load a diffusers SD directory from local files only (feature_extractor/safety_checker are ignored).

    The layouts the hub stores (SD 1.x / RoentGen, SD 2.x) load as they are: .safetensors or
    .bin weights, the plain or a ``variant`` (fp16) set of files, any diffusers scheduler."""
    root = check_model_dir(path)
    scheduler_cls = _scheduler_class(root)
    for component in ("unet", "text_encoder"):
        check_weights(root, component, variant)
    local = {"local_files_only": True, **_variant(variant)}
    models = {"low_cpu_mem_usage": False, **local}  # no `accelerate` needed
    try:
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype, **models)
        text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=dtype, **local)
        tokenizer = AutoTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
        scheduler = scheduler_cls.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"{root}: cannot load the Stable Diffusion components ({type(exc).__name__}: {exc}). "
            f"The directory is incomplete or from an incompatible version; re-save it with save_pretrained."
        ) from exc
    for model in (unet, text_encoder):
        model.to(device).eval()
    vae = load_vae(root, device, variant)
    return StableDiffusion(vae, unet, text_encoder, tokenizer, scheduler, str(root), fingerprint(root))
