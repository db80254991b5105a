"""ltaug.method.iterated and ltaug.method.networks: Eqs. 1-5 on hand-made tensors, training, determinism, resume, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltaug.common.errors import ConfigError
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
from helpers.il import CPU, TINY


# ---------------------------------------------------------------------------- Eq. 1: the simplicial embedding


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
