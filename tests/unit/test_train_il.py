"""Stage train_il: generations written as checkpoints, resumed after a kill to the weights of an uninterrupted run, refused when they are another config's or another data's; the model every later stage reads."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from ltaug.common.errors import ConfigError, InputError
from ltaug.method.checkpoint import HISTORY_COLUMNS, check_checkpoint, generation_path, load_il_model, read_checkpoint
from ltaug.method.iterated import ILConfig
from ltaug.method.train_il import train_iterated
from helpers.il import CLASSES, CPU, PREVALENCE, SPLIT, TINY, assert_same_weights


def test_training_writes_every_generation_model_and_history(trained):
    outdir, result = trained
    assert sorted(p.name for p in outdir.iterdir()) == ["gen_1.pt", "gen_2.pt", "history.csv", "model.pt"]
    history = pd.read_csv(outdir / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    phases = list(zip(history["generation"], history["phase"], history["epoch"]))
    assert phases == [(1, "interaction", e) for e in range(1, 7)] + [(2, "imitation", 1)] + [(2, "interaction", e) for e in range(1, 7)]
    imitation = history[history["phase"] == "imitation"]
    assert imitation["train_imitation_bce"].notna().all() and imitation["train_recon"].isna().all()
    assert result.generation == 2
    loaded = load_il_model(outdir / "model.pt")
    assert_same_weights(loaded.model, result.model)
    assert loaded.classes == CLASSES and loaded.tail == CLASSES[2:] and loaded.latent_shape == (4, 8, 8)
    assert loaded.model_fingerprint == "f" * 64
    torch.load(outdir / "gen_1.pt", weights_only=True)  # plain tensors and values only


def test_training_lowers_reconstruction_error_and_beats_the_prevalence_baseline(trained):
    history = pd.read_csv(trained[0] / "history.csv")
    first, last = history.iloc[0], history.iloc[-1]
    assert last["val_recon_mse"] < 0.7 * first["val_recon_mse"]
    # a random scorer's AP is the class's prevalence: the classes are clearly learnt
    assert last["val_map_head"] > 2 * np.mean(PREVALENCE[:2])
    assert last["val_map_tail"] > 4 * np.mean(PREVALENCE[2:])
    assert 1 / 16 < last["val_sparsity"] <= 1.0


def test_same_seed_same_weights_other_seed_other_weights(stores, trained, tmp_path):
    train, val = stores
    cfg = ILConfig(**{**TINY.identity(), "generations": 1, "interaction_epochs": 1})
    a = train_iterated(train, val, SPLIT, tmp_path / "a", cfg, CPU)
    b = train_iterated(train, val, SPLIT, tmp_path / "b", cfg, CPU)
    assert_same_weights(a.model, b.model)
    c = train_iterated(train, val, SPLIT, tmp_path / "c", ILConfig(**{**cfg.identity(), "seed": 1}), CPU)
    assert not torch.equal(a.model.student.head.weight, c.model.student.head.weight)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(stores, trained, tmp_path):
    train, val = stores
    outdir, uninterrupted = trained
    train_iterated(train, val, SPLIT, tmp_path, TINY, CPU, stop_after=1)  # "killed" after generation 1
    assert generation_path(tmp_path, 1).exists() and not (tmp_path / "model.pt").exists()
    resumed = train_iterated(train, val, SPLIT, tmp_path, TINY, CPU)
    assert_same_weights(resumed.model, uninterrupted.model)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "history.csv").drop(columns=["samples_per_s", "seconds"]),
        pd.read_csv(outdir / "history.csv").drop(columns=["samples_per_s", "seconds"]),
    )


def test_checkpoint_of_another_config_is_refused(trained):
    path = trained[0] / "gen_1.pt"
    state_ = read_checkpoint(path)
    check_checkpoint(state_, path, TINY)  # its own config: accepted
    other = ILConfig(**{**TINY.identity(), "lam": 0.9})
    with pytest.raises(InputError, match=r"gen_1.pt: this checkpoint was made with another il configuration \(lam: 0.5 there, 0.9 now\)"):
        check_checkpoint(state_, path, other)


def test_stale_checkpoints_of_another_config_are_not_resumed(stores, trained, tmp_path, capsys):
    train, val = stores
    train_iterated(train, val, SPLIT, tmp_path, TINY, CPU, stop_after=1)
    other = ILConfig(**{**TINY.identity(), "generations": 1, "interaction_epochs": 1, "lam": 0.8})
    result = train_iterated(train, val, SPLIT, tmp_path, other, CPU)
    assert "removing" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / "model.pt")["config"]["lam"] == 0.8
    assert sorted(p.name for p in tmp_path.glob("gen_*.pt")) == ["gen_1.pt"] and result.generation == 1


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="model.pt: not a readable checkpoint"):
        load_il_model(bad)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_il_model(tmp_path / "missing.pt")


def test_latents_of_another_model_are_refused(stores, tmp_path):
    train, val = stores
    with pytest.raises(InputError, match="were made by model"):
        train_iterated(train, val, SPLIT, tmp_path, TINY, CPU, expect={"model_fingerprint": "0" * 64})
    assert not any(tmp_path.iterdir())


def test_bfloat16_autocast_trains_float32_weights_to_the_same_quality(stores, tmp_path):
    """il.precision: bfloat16 autocast changes the numbers of the passes, not what is learnt or stored."""
    train, val = stores
    cfg = ILConfig(**{**TINY.identity(), "generations": 1, "interaction_epochs": 3})
    full = train_iterated(train, val, SPLIT, tmp_path / "float32", cfg, CPU)
    half = train_iterated(train, val, SPLIT, tmp_path / "bfloat16", ILConfig(**{**cfg.identity(), "precision": "bfloat16"}), CPU)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    a, b = (pd.read_csv(tmp_path / name / "history.csv").iloc[-1] for name in ("float32", "bfloat16"))
    assert np.isfinite(b["train_loss"]) and b["val_recon_mse"] < 1.2 * a["val_recon_mse"]
    assert not torch.equal(full.model.student.head.weight, half.model.student.head.weight)  # it did run in bfloat16
    with pytest.raises(ConfigError, match="il.precision"):
        ILConfig(precision="float16")
