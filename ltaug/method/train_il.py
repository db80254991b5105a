"""Stage train_il: the generations of ltaug.method.iterated, one checkpoint each, resumable, and the saved model.

Every generation g ends in ``gen_{g}.pt`` (weights, optimiser-free state, the config, the
identity of the training data and the history so far), written atomically. A run that is
killed resumes from the last complete generation whose config and data match, and ends with
the weights of an uninterrupted run (ltaug.method.iterated seeds every random draw by (seed, g)).
``model.pt`` is the last generation; :func:`ltaug.method.checkpoint.load_il_model` is how the later stages read it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltaug.backbone.latents import open_latents
from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.data.classes import ClassSplit
from ltaug.method.checkpoint import (
    HISTORY_COLUMNS,
    ILModel,
    check_checkpoint,
    checkpoint,
    data_identity,
    generation_path,
    model_from_state,
    read_checkpoint,
    save_checkpoint,
)
from ltaug.method.iterated import (
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
