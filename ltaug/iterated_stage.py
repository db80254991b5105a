"""Stage train_il: the generations of ltaug.iterated, one checkpoint each, resumable, and the saved model.

Every generation g ends in ``gen_{g}.pt`` (weights, optimiser-free state, the config, the
identity of the training data and the history so far), written atomically. A run that is
killed resumes from the last complete generation whose config and data match, and ends with
the weights of an uninterrupted run (ltaug.iterated seeds every random draw by (seed, g)).
``model.pt`` is the last generation; :func:`load_il_model` is how the later stages read it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltaug.data import ClassSplit
from ltaug.errors import InputError
from ltaug.io import atomic_path
from ltaug.iterated import (
    ILConfig,
    LatentStream,
    build_heads,
    build_model,
    build_student,
    class_pos_weight,
    evaluate,
    imitation_phase,
    interaction_phase,
)
from ltaug.latents import open_latents
from ltaug.models import SparseLatentModel

FORMAT = "ltaug.il/1"  # checkpoint format tag
HISTORY_COLUMNS = [
    "generation", "phase", "epoch", "train_loss", "train_imitation_bce", "train_recon", "train_cls_bce",
    "val_recon_mse", "val_map_head", "val_map_tail", "val_map_all", "val_sparsity", "samples_per_s", "seconds",
]  # fmt: skip


# ---------------------------------------------------------------------------- checkpoints


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


# ---------------------------------------------------------------------------- the stage


def _resume_point(outdir: Path, cfg: ILConfig, data: dict, log) -> dict | None:
    """The latest generation checkpoint of this config and data in ``outdir``; others are removed.

    The workflow reruns train_il exactly when its config or inputs change, so a checkpoint of
    another config or other latents belongs to an outdated run: it is deleted, with a log line.
    """
    latest = None
    for g in range(cfg.generations, 0, -1):
        path = generation_path(outdir, g)
        if not path.exists():
            continue
        state = read_checkpoint(path)
        try:
            check_checkpoint(state, path, cfg, data)
        except InputError as exc:
            log(f"removing {path}: {exc}")
            path.unlink()
            continue
        if latest is None:
            latest = state
    for stale in outdir.glob("gen_*.pt"):  # generations beyond il.generations, from a longer run
        g = stale.stem.split("_", 1)[1]
        if not g.isdigit() or int(g) > cfg.generations:
            log(f"removing {stale}: not a generation of this run (il.generations = {cfg.generations})")
            stale.unlink()
    return latest


def train_iterated(
    train_store: str | Path,
    val_store: str | Path,
    split: ClassSplit,
    outdir: str | Path,
    cfg: ILConfig,
    device: torch.device,
    expect: dict | None = None,
    resume: bool = True,
    stop_after: int | None = None,
) -> ILModel:
    """Stage train_il: G generations on the train latents, validated on val; writes into ``outdir``:

    ``gen_{g}.pt`` after every generation, ``history.csv`` (one row per generation, phase and
    epoch) and ``model.pt`` (the last generation's S, D, C with its config). With ``resume``,
    training continues after the latest ``gen_{g}.pt`` of the same config and data.
    ``expect`` is checked against both stores' attributes (see ``open_latents``).
    ``stop_after`` ends the run after that generation (tests of resuming).
    """
    torch.set_num_threads(cfg.threads)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"train_il: {message}", file=sys.stderr, flush=True)

    train_group, val_group = open_latents(train_store, expect), open_latents(val_store, expect)
    for store, group in ((train_store, train_group), (val_store, val_group)):
        if list(group.attrs["classes"]) != list(split.classes):
            raise InputError(
                f"{store}: its classes {list(group.attrs['classes'])} differ from classes.json's {split.classes}; "
                f"rerun encode_latents with the current manifest."
            )
    latent_shape = tuple(train_group["z"].shape[1:])
    train = LatentStream(train_group, cfg.batch_size, cfg.shuffle_buffer)
    val = LatentStream(val_group, max(cfg.batch_size, 256), cfg.shuffle_buffer)
    data = data_identity(dict(train_group.attrs), dict(val_group.attrs), train.n, val.n, split)
    counts = np.zeros(len(split.classes))
    for _, y in train.ordered():
        counts += y.numpy().sum(axis=0)
    pos_weight = class_pos_weight(counts, train.n, cfg.pos_weight_max).to(device) if cfg.pos_weight else None

    model = build_model(cfg, latent_shape, len(split.classes)).to(device)
    history: list[dict] = []
    first = 1
    state = _resume_point(outdir, cfg, data, log) if resume else None
    if state is not None:
        model.student.load_state_dict(state["student"])
        model.decoder.load_state_dict(state["decoder"])
        model.classifier.load_state_dict(state["classifier"])
        history, first = list(state["history"]), state["generation"] + 1
        log(f"resuming after generation {state['generation']} ({generation_path(outdir, state['generation'])})")

    def record(generation: int, phase: str, row: dict) -> None:
        row = {"generation": generation, "phase": phase, **row, **evaluate(model, val, split, device)}
        history.append({c: float(row[c]) if c not in ("generation", "phase", "epoch") else row[c]
                        for c in HISTORY_COLUMNS if c in row})  # fmt: skip
        log(f"gen {generation} {phase} epoch {row['epoch']}: loss {row['train_loss']:.4f}, "
            f"val recon MSE {row['val_recon_mse']:.4f}, val mAP head {row['val_map_head']:.3f} "
            f"tail {row['val_map_tail']:.3f}, sparsity {row['val_sparsity']:.3f}, {row['samples_per_s']:.0f} z/s")  # fmt: skip

    for g in range(first, cfg.generations + 1):
        if g > 1:
            teacher = model.student
            model.student = build_student(cfg, latent_shape[0], g).to(device)
            if cfg.reset_heads:
                decoder, classifier = build_heads(cfg, latent_shape[0], len(split.classes), g)
                model.decoder, model.classifier = decoder.to(device), classifier.to(device)
            for row in imitation_phase(teacher, model.student, train, cfg, g, device):
                record(g, "imitation", row)
            del teacher
        for row in interaction_phase(model, train, cfg, pos_weight, g, device):
            record(g, "interaction", row)
        model.eval()
        save_checkpoint(checkpoint(model, cfg, data, g, history, latent_shape, split), generation_path(outdir, g))
        log(f"generation {g} saved to {generation_path(outdir, g)}")
        if stop_after is not None and g >= stop_after:
            return model_from_state(read_checkpoint(generation_path(outdir, g)), device)

    final = read_checkpoint(generation_path(outdir, cfg.generations))
    frame = pd.DataFrame(final["history"], columns=HISTORY_COLUMNS)
    with atomic_path(outdir / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(outdir / "model.pt") as tmp:
        torch.save(final, tmp)
    return model_from_state(final, device)
