"""Training schemes: the samplers' draws, the mix of a synthetic set on top of re-balancing, the logit-adjusted loss."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltaug.common.errors import ConfigError
from ltaug.common.sampling import balanced_indices
from ltaug.evaluation.schemes import (
    RebalancingConfig,
    Sampler,
    TrainingPool,
    check_scheme,
    logit_offsets,
    training_loss,
)


def _labels(n=200, seed=0):
    """(n, 4): two head classes (40 %, 30 %), two tail classes (5 % and 3 %), some rows without a class."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 4), dtype=np.uint8)
    y[:, 0] = rng.random(n) < 0.4
    y[:, 1] = rng.random(n) < 0.3
    y[rng.choice(n, 10, replace=False), 2] = 1
    y[rng.choice(n, 6, replace=False), 3] = 1
    return y


def _pool(real, synthetic_per_tail=0, tails=(2, 3)):
    made_for = np.repeat(np.array(tails, dtype=np.int64), synthetic_per_tail)
    fake = np.zeros((len(made_for), real.shape[1]), dtype=np.uint8)
    fake[np.arange(len(made_for)), made_for] = 1
    fake[::3, 0] = 1  # some synthetic samples carry a head class too (their neighbour's)
    return TrainingPool(np.concatenate([real, fake]), len(real), made_for)


def test_balanced_real_only_draws_what_the_balanced_row_drew_before_schemes():
    real = _labels()
    sampler = Sampler("balanced", _pool(real), 8, torch.Generator().manual_seed(5))
    reference = torch.Generator().manual_seed(5)
    torch.randperm(len(real), generator=reference)  # the classifier drew the first pass's order under every balance
    for _ in range(20):
        assert torch.equal(sampler(), balanced_indices(real, 8, 1.0, reference))


def test_plain_draws_shuffled_passes_over_every_row():
    pool = _pool(_labels(50), synthetic_per_tail=5)
    sampler = Sampler("plain", pool, 8, torch.Generator().manual_seed(1))
    reference = torch.Generator().manual_seed(1)
    order, position = torch.randperm(60, generator=reference), 0
    for _ in range(30):  # the classifier's passes as they were: a new permutation when a batch does not fit
        if position + 8 > len(order):
            order, position = torch.randperm(60, generator=reference), 0
        assert torch.equal(sampler(), order[position : position + 8])
        position += 8


def test_logit_adjusted_without_a_set_draws_the_plain_passes():
    pool = _pool(_labels(50))
    plain, adjusted = (Sampler(s, pool, 8, torch.Generator().manual_seed(2)) for s in ("plain", "logit-adjusted"))
    for _ in range(20):
        assert torch.equal(plain(), adjusted())


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_balanced_hands_the_configured_share_of_a_tail_class_s_draws_to_its_synthetic_samples(share):
    real = _labels()
    pool = _pool(real, synthetic_per_tail=20)
    sampler = Sampler("balanced", pool, 50, torch.Generator().manual_seed(0), share=share)
    generator = torch.Generator().manual_seed(0)  # the same draws, to know the class each was made for
    torch.randperm(len(pool.labels), generator=generator)
    counts = {k: [0, 0] for k in range(4)}  # class -> [draws, synthetic draws]
    from ltaug.common.sampling import balanced_draw

    for _ in range(400):
        rows = sampler()
        _, columns = balanced_draw(real, 50, 1.0, generator)
        torch.rand(50, generator=generator, dtype=torch.float64), torch.rand(50, generator=generator, dtype=torch.float64)
        for row, k in zip(rows.tolist(), columns.tolist()):
            if k >= 0:
                counts[k][0] += 1
                counts[k][1] += row >= pool.n_real
                if row >= pool.n_real:
                    assert pool.made_for[row - pool.n_real] == k  # a draw goes to a sample made for its own class
    for k in (2, 3):
        draws, synthetic = counts[k]
        assert abs(synthetic / draws - share) < 3 * math.sqrt(share * (1 - share) / draws) + 1e-9
    assert counts[0][1] == counts[1][1] == 0, "a head class's draws stay on the real images"


def test_a_share_of_zero_never_draws_a_synthetic_sample():
    pool = _pool(_labels(), 20)
    sampler = Sampler("balanced", pool, 50, torch.Generator().manual_seed(3), share=0.0)
    assert all(int(sampler().max()) < pool.n_real for _ in range(50))


def test_logit_adjusted_adds_share_over_one_minus_share_of_a_class_s_positives_to_every_pass():
    real = _labels()
    pool = _pool(real, synthetic_per_tail=4)  # fewer samples than a pass takes: they cycle
    sampler = Sampler("logit-adjusted", pool, 10, torch.Generator().manual_seed(0), share=0.5)
    n_t = real[:, 2].sum(), real[:, 3].sum()
    assert sampler.per_pass == {2: n_t[0], 3: n_t[1]}  # share 0.5: as many synthetic draws as real positives
    one_pass = sampler.order
    assert len(one_pass) == len(real) + sum(n_t)
    assert sorted(one_pass[one_pass < len(real)].tolist()) == list(range(len(real)))  # every real image once
    synthetic = one_pass[one_pass >= len(real)] - len(real)
    assert np.bincount(pool.made_for[synthetic.numpy()], minlength=4)[2:].tolist() == list(n_t)
    # the prior counts what a pass draws
    extra = np.zeros((1, 4))
    for k, m in sampler.per_pass.items():
        extra += m * pool.labels[len(real):][pool.made_for == k].mean(axis=0)
    expected = (real.sum(axis=0) + extra[0]) / (len(real) + sum(n_t))
    np.testing.assert_allclose(sampler.prior(), expected)


def test_the_logit_adjusted_loss_equals_its_formula_on_a_hand_made_batch():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.8, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    prior = np.array([0.5, 0.2, 0.01])
    tau = 1.5
    loss = training_loss(logits, targets, offsets=logit_offsets(prior, tau))
    by_hand = 0.0
    for b in range(2):
        for k in range(3):
            z = logits[b, k].item() + tau * math.log(prior[k] / (1 - prior[k]))
            p = 1 / (1 + math.exp(-z))
            y = targets[b, k].item()
            by_hand -= y * math.log(p) + (1 - y) * math.log(1 - p)
    assert loss.item() == pytest.approx(by_hand / 6, rel=1e-6)
    # a class at prior 0.5 is not shifted; a rare class's logit is pushed down in training
    offsets = logit_offsets(prior, tau)
    assert offsets[0] == 0 and offsets[2] < offsets[1] < 0


def test_a_synthetic_sample_s_loss_weight():
    logits, targets = torch.tensor([[1.0, -1.0], [0.5, 0.5]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    plain = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weighted = training_loss(logits, targets, weights=torch.tensor([1.0, 0.25]))
    assert weighted.item() == pytest.approx(((plain[0].sum() + 0.25 * plain[1].sum()) / 4).item())
    assert training_loss(logits, targets).item() == pytest.approx(plain.mean().item())


def test_schemes_refuse_what_they_cannot_draw():
    with pytest.raises(ConfigError, match="not a training scheme"):
        check_scheme("oversampled", RebalancingConfig())
    with pytest.raises(ConfigError, match="synthetic_share: 1"):
        check_scheme("logit-adjusted", RebalancingConfig(synthetic_share=1.0))
    check_scheme("balanced", RebalancingConfig(synthetic_share=1.0))
