"""ltaug.method.iterated and ltaug.method.networks: Eqs. 1-5 on hand-made tensors, training, determinism, resume, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import synthetic_latents, write_latent_store

from ltaug.common.errors import ConfigError, InputError
from ltaug.data.classes import ClassSplit
from ltaug.method.checkpoint import HISTORY_COLUMNS, check_checkpoint, generation_path, load_il_model, read_checkpoint
from ltaug.method.iterated import (
    ILConfig,
    LatentStream,
    build_model,
    class_pos_weight,
    imitation_loss,
    interaction_losses,
    interaction_phase,
    sample_one_hot,
)
from ltaug.method.networks import LatentClassifier, Student, densenet121_classifier
from ltaug.method.train_il import train_iterated

CLASSES = ["Cardiomegaly", "Pleural Effusion", "Nodule", "Fracture"]
PREVALENCE = [0.4, 0.3, 0.1, 0.06]
SPLIT = ClassSplit(
    classes=CLASSES, head=CLASSES[:2], tail=CLASSES[2:], medium=[],
    train_counts={}, prevalence=dict(zip(CLASSES, PREVALENCE)), n={"train": 256, "val": 96, "test": 0},
)  # fmt: skip
TINY = ILConfig(
    generations=2, imitation_epochs=1, interaction_epochs=6, batch_size=16, lr=3e-3, embed_channels=16,
    student_width=8, student_depth=1, decoder_width=16, decoder_depth=1, classifier_width=8, classifier_depth=2,
    threads=1,
)  # fmt: skip
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    z, y = synthetic_latents(256, PREVALENCE, seed=0)
    zv, yv = synthetic_latents(96, PREVALENCE, seed=1)
    train = write_latent_store(root / "train.zarr", z, y, CLASSES, "train", chunk=64)
    val = write_latent_store(root / "val.zarr", zv, yv, CLASSES, "val", chunk=64)
    return train, val


def state(model) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for part in ("student", "decoder", "classifier")
            for k, v in getattr(model, part).state_dict().items()}  # fmt: skip


def assert_same_weights(a, b) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------- Eq. 1: the simplicial embedding


def test_student_channel_probabilities_sum_to_one_everywhere():
    torch.manual_seed(0)
    student = Student(4, 16, width=8, depth=2)
    zs = student(3 * torch.randn(5, 4, 8, 12))
    assert zs.shape == (5, 16, 8, 12)
    assert (zs >= 0).all()
    torch.testing.assert_close(zs.sum(dim=1), torch.ones(5, 8, 12), atol=1e-6, rtol=0)
    # and it is the softmax of the logits over channels, at every position
    logits = student.logits(torch.ones(1, 4, 8, 12))
    torch.testing.assert_close(student(torch.ones(1, 4, 8, 12)), logits.exp() / logits.exp().sum(1, keepdim=True))


def test_student_temperature_sharpens():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 8, 8)
    cold = Student(4, 16, 8, 1, temperature=0.1)
    warm = Student(4, 16, 8, 1, temperature=1.0)
    warm.load_state_dict(cold.state_dict())
    assert cold(z).max(dim=1).values.mean() > warm(z).max(dim=1).values.mean()


def test_student_rejects_latents_not_divisible_by_its_depth():
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth = 4"):
        Student(4, 8, 8, depth=2)(torch.zeros(1, 4, 6, 8))


# ---------------------------------------------------------------------------- Eq. 2: imitation


def test_one_hot_targets_follow_the_teacher_per_position():
    """Each position gets a one-hot target; over many draws the channel frequencies match the teacher.

    Tolerance: 5 binomial standard deviations sqrt(p (1 - p) / n) per (position, channel), n = 20,000
    draws, so a correct sampler fails with probability below 1e-5 over all 16 cells.
    """
    p = torch.tensor(
        [  # (C'=4, 2, 2): four different distributions, one per position; channel k at position (i, j)
            [[0.70, 0.00], [0.25, 0.05]],
            [[0.10, 1.00], [0.25, 0.05]],
            [[0.10, 0.00], [0.25, 0.10]],
            [[0.10, 0.00], [0.25, 0.80]],
        ]
    )
    n = 20_000
    targets = sample_one_hot(p.expand(n, -1, -1, -1), torch.Generator().manual_seed(0))  # (n, 4, 2, 2)
    assert targets.shape == (n, 4, 2, 2)
    assert set(targets.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(n, 2, 2))  # exactly one channel per position
    freq = targets.mean(dim=0)  # (4, 2, 2)
    tolerance = 5 * torch.sqrt(p * (1 - p) / n) + 1e-12
    assert ((freq - p).abs() <= tolerance).all(), (freq, p)
    assert (targets[:, 1, 0, 1] == 1).all()  # a certain channel is always drawn


def test_one_hot_targets_do_not_mix_channels_and_positions():
    """A teacher that is certain of channel (i + 2j) at position (i, j): the targets are exactly that."""
    p = torch.zeros(3, 8, 2, 2)
    for i in range(2):
        for j in range(2):
            p[:, i + 2 * j, i, j] = 1.0
    torch.testing.assert_close(sample_one_hot(p, torch.Generator().manual_seed(1)), p)


def test_imitation_loss_is_bce_against_the_targets():
    probs = torch.tensor([[[[0.5]], [[0.25]], [[0.25]]]])  # (1, 3, 1, 1)
    target = torch.tensor([[[[1.0]], [[0.0]], [[0.0]]]])
    expected = -(math.log(0.5) + 2 * math.log(0.75)) / 3
    assert imitation_loss(probs, target).item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------- Eqs. 3-5: interaction


def test_interaction_loss_is_the_lambda_weighted_sum():
    torch.manual_seed(0)
    model = build_model(TINY, (4, 8, 8), 4)
    z, y = torch.randn(6, 4, 8, 8), torch.tensor([[1, 0, 0, 1]] * 3 + [[0, 1, 0, 0]] * 3)
    pos_weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    cfg = ILConfig(**{**TINY.identity(), "lam": 0.3})
    loss, l_r, l_c = interaction_losses(model, z, y, cfg, pos_weight)
    zs, recon, logits = model(z)
    q = torch.sigmoid(logits)
    bce = -(pos_weight * y * torch.log(q) + (1 - y) * torch.log(1 - q)).mean()
    assert l_r.item() == pytest.approx(((recon - z) ** 2).mean().item(), rel=1e-5)
    assert l_c.item() == pytest.approx(bce.item(), rel=1e-4)
    assert loss.item() == pytest.approx(0.3 * l_r.item() + 0.7 * l_c.item(), rel=1e-6)
    l1 = interaction_losses(model, z, y, ILConfig(**{**TINY.identity(), "recon_loss": "l1"}), None)[1]
    assert l1.item() == pytest.approx((recon - z).abs().mean().item(), rel=1e-5)


@pytest.mark.parametrize("lam,silent,active", [(1.0, "classifier", "decoder"), (0.0, "decoder", "classifier")])
def test_lambda_one_silences_the_classifier_and_zero_the_decoder(lam, silent, active):
    torch.manual_seed(0)
    model = build_model(TINY, (4, 8, 8), 4)
    cfg = ILConfig(**{**TINY.identity(), "lam": lam})
    loss, _, _ = interaction_losses(model, torch.randn(4, 4, 8, 8), torch.ones(4, 4), cfg, None)
    loss.backward()
    grads = lambda part: [p.grad for p in getattr(model, part).parameters()]  # noqa: E731
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads(silent))
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads(active))
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.student.parameters())


def test_pos_weight_is_negatives_over_positives_capped():
    torch.testing.assert_close(class_pos_weight([10, 50, 1, 0], 100, cap=50.0), torch.tensor([9.0, 1.0, 50.0, 50.0]))


def test_densenet121_takes_c_prime_channels():
    torch.manual_seed(0)
    model = densenet121_classifier(16, 5, stem="small").eval()
    assert model.features.conv0.in_channels == 16
    assert model(torch.rand(2, 16, 16, 16)).shape == (2, 5)
    big = densenet121_classifier(16, 5, stem="imagenet").eval()
    assert big(torch.rand(1, 16, 32, 32)).shape == (1, 5)


def test_networks_that_do_not_fit_the_latents_are_a_config_error():
    with pytest.raises(ConfigError, match="il.classifier_stem: small"):
        build_model(ILConfig(classifier="densenet121", classifier_stem="imagenet"), (4, 16, 16), 3)
    with pytest.raises(ConfigError, match="il.student_depth"):
        build_model(ILConfig(student_depth=3), (4, 12, 12), 3)


@pytest.mark.parametrize("key,value", [("lam", 1.5), ("recon_loss", "huber"), ("generations", 0), ("classifier", "resnet")])
def test_config_rejects_bad_values(key, value):
    with pytest.raises(ConfigError, match=f"il.{key}"):
        ILConfig(**{key: value})


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    train, val = stores
    outdir = tmp_path_factory.mktemp("il")
    result = train_iterated(train, val, SPLIT, outdir, TINY, CPU)
    return outdir, result


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


def test_every_epoch_trains_in_train_mode(stores):
    """Validation after an epoch puts the model in eval mode; the next epoch must train BatchNorm again."""
    train, _ = stores
    from ltaug.backbone.latents import open_latents

    cfg = ILConfig(**{**TINY.identity(), "interaction_epochs": 2})
    model = build_model(cfg, (4, 8, 8), 4)
    phase = interaction_phase(model, LatentStream(open_latents(train), 16, 256), cfg, None, 1, CPU)
    next(phase)
    model.eval()  # as the validation between epochs does
    bn = next(m for m in model.classifier.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    next(phase)
    assert not torch.equal(bn.running_mean, before)


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


def test_latent_classifier_is_c_of_s(trained):
    model = load_il_model(trained[0] / "model.pt").model
    z = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(LatentClassifier(model.student, model.classifier)(z), model(z)[2])


def test_balanced_stream_draws_every_class_about_equally_often():
    from ltaug.method.iterated import LatentStream

    labels = np.zeros((400, 3), dtype=np.uint8)
    labels[:360, 0] = 1  # head
    labels[360:392, 1] = 1  # medium
    labels[392:, 2] = 1  # tail: 8 of 400
    z = np.arange(400, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), dtype=np.float32)
    stream = LatentStream({"z": zarr_like(z, 64), "labels": zarr_like(labels, 64)}, batch_size=50, buffer=4096)
    drawn = np.concatenate([y.numpy() for _, y in stream.shuffled(torch.Generator().manual_seed(0), balance=1.0)])
    assert len(drawn) == 400  # an epoch keeps its length
    share = drawn.mean(axis=0)
    assert share == pytest.approx([1 / 3] * 3, abs=0.08)  # the tail, 2 % of the rows, is a third of the draws
    natural = np.concatenate([y.numpy() for _, y in stream.shuffled(torch.Generator().manual_seed(0))])
    assert np.array_equal(np.sort(natural.argmax(axis=1)), np.sort(labels.argmax(axis=1)))  # balance 0: a permutation


class zarr_like(np.ndarray):
    """A numpy array with the ``chunks`` attribute LatentStream reads from a Zarr array."""

    def __new__(cls, values: np.ndarray, chunk: int):
        out = np.asarray(values).view(cls)
        out.chunks = (chunk, *values.shape[1:])
        return out


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
