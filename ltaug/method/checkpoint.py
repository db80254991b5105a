"""The IL model's checkpoints: one per generation of stage train_il (weights, config, the identity of the training data,
the history so far), their checks, and :func:`load_il_model`, how every later stage reads ``results/il/model.pt``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.data.classes import ClassSplit
from ltaug.method.iterated import ILConfig, build_model
from ltaug.method.networks import SparseLatentModel


FORMAT = "ltaug.il/1"  # checkpoint format tag


HISTORY_COLUMNS = [
    "generation", "phase", "epoch", "train_loss", "train_imitation_bce", "train_recon", "train_cls_bce",
    "val_recon_mse", "val_map_head", "val_map_tail", "val_map_all", "val_sparsity", "samples_per_s", "seconds",
]  # fmt: skip


def data_identity(train_attrs: dict, val_attrs: dict, n_train: int, n_val: int, split: ClassSplit) -> dict:
    """What the training data is, as far as a checkpoint must match it: the latents' origin and the classes."""
    keep = ("model_fingerprint", "image_size", "mode", "seed", "scaling_factor", "classes")
    return {
        "train": {k: train_attrs.get(k) for k in keep} | {"n": n_train},
        "val": {k: val_attrs.get(k) for k in keep} | {"n": n_val},
        "head": list(split.head),
        "tail": list(split.tail),
    }


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint(model: SparseLatentModel, cfg: ILConfig, data: dict, generation: int, history: list[dict],
               latent_shape: tuple[int, ...], split: ClassSplit) -> dict:  # fmt: skip
    """Everything needed to continue or use the model; only tensors and plain values (weights_only loading)."""
    return {
        "format": FORMAT,
        "generation": generation,
        "config": cfg.identity(),
        "config_digest": _digest(cfg.identity()),
        "data": data,
        "data_digest": _digest(data),
        "latent_shape": list(latent_shape),
        "classes": list(split.classes),
        "head": list(split.head),
        "tail": list(split.tail),
        "student": model.student.state_dict(),
        "decoder": model.decoder.state_dict(),
        "classifier": model.classifier.state_dict(),
        "history": history,
    }


def save_checkpoint(state: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint file, loaded with ``weights_only=True``; InputError if it is not one of ours."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint; run the train_il stage to make it.") from None
    except Exception as exc:  # a truncated or foreign file: pickle and zip errors of many kinds
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); delete it and rerun train_il.") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not an ltaug iterated-learning checkpoint (format {FORMAT}); rerun train_il.")
    return state


def check_checkpoint(state: dict, path: str | Path, cfg: ILConfig, data: dict | None = None) -> None:
    """Raise InputError unless the checkpoint was made with ``cfg`` (and, if given, on ``data``)."""
    if state["config_digest"] != _digest(cfg.identity()):
        mine = cfg.identity()
        changed = sorted(k for k in set(mine) | set(state["config"]) if mine.get(k) != state["config"].get(k))
        detail = ", ".join(f"{k}: {state['config'].get(k)!r} there, {mine.get(k)!r} now" for k in changed)
        raise InputError(
            f"{path}: this checkpoint was made with another il configuration ({detail}); it cannot be continued "
            f"with the current one. Restore those il.* values, or delete the checkpoint to train from scratch."
        )
    if data is not None and state["data_digest"] != _digest(data):
        raise InputError(
            f"{path}: this checkpoint was trained on other latents or classes (made with {state['data']}, now "
            f"{data}); delete it to train from scratch on the current latents."
        )


def generation_path(outdir: str | Path, generation: int) -> Path:
    return Path(outdir) / f"gen_{generation}.pt"


@dataclass
class ILModel:
    """A trained model as later stages use it: the networks in eval mode and what they were trained on."""

    model: SparseLatentModel
    config: ILConfig
    classes: list[str]
    head: list[str]
    tail: list[str]
    latent_shape: tuple[int, int, int]
    data: dict  # data_identity() of the training latents
    generation: int

    @property
    def model_fingerprint(self) -> str:
        """The diffusion model fingerprint of the latents it was trained on."""
        return self.data["train"]["model_fingerprint"]


def model_from_state(state: dict, device: torch.device | str = "cpu") -> ILModel:
    cfg = ILConfig(**state["config"])
    shape = tuple(state["latent_shape"])
    model = build_model(cfg, shape, len(state["classes"]))
    model.student.load_state_dict(state["student"])
    model.decoder.load_state_dict(state["decoder"])
    model.classifier.load_state_dict(state["classifier"])
    model = model.to(device).eval()
    return ILModel(model, cfg, state["classes"], state["head"], state["tail"], shape, state["data"], state["generation"])


def load_il_model(path: str | Path, device: torch.device | str = "cpu") -> ILModel:
    """``results/il/model.pt`` (or any ``gen_{g}.pt``) as an :class:`ILModel` on ``device``, in eval mode."""
    return model_from_state(read_checkpoint(path), device)
