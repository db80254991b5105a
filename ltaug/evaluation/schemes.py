"""Training schemes of Table 1's classifier, and how a synthetic set is added to the real images under each.

Every long-tail paper that reports a gain from generated samples adds them *on top of* a re-balancing
sampler or loss, never instead of one; the question a user asks is "does Balanced + these samples beat
Balanced?". So every row of Table 1 is a pair (scheme, set): its classifier is trained under one of

``plain``           shuffled passes over the real training images and every sample of the set (each pass a new
                    permutation): the paper's setting, where a tail class is a few per cent of the draws.
``balanced``        class-balanced batches (:func:`ltaug.common.sampling.balanced_draw` with balance 1: a class
                    first, every class equally often, then one of its rows). A set is *added* with a mix: of the
                    draws made for a tail class, a share ``eval.rebalancing.synthetic_share`` is handed to one of
                    its synthetic samples (uniformly), the rest stay on its real images.
``logit-adjusted``  the shuffled passes of plain and the logit-adjusted loss of Menon et al. (ICLR 2021,
                    "Long-tail learning via logit adjustment"), per class as a binary problem:
                    BCE(f_k(x) + tau * log(pi_k / (1 - pi_k)), y_k), pi_k the share of the draws positive for
                    class k (the training prior), predictions f_k(x) unadjusted. A set is added to every pass as
                    m_t = round(n_t * share / (1 - share)) samples of tail class t (n_t its real positives,
                    cycling through its samples), so the set makes up ``share`` of the class's positives in a
                    pass; the prior counts them.

With no synthetic sample a scheme's draws are exactly those of its real-only row (Baseline,
Balanced, Logit-adjusted), for the same seed. ``eval.rebalancing.synthetic_weight`` weighs the loss of a
synthetic sample under every scheme (1: as a real one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ltaug.common.config import config_section
from ltaug.common.errors import ConfigError
from ltaug.common.sampling import balanced_draw
from ltaug.common.variants import SCHEMES


@config_section("eval.rebalancing")
@dataclass(frozen=True)
class RebalancingConfig:
    synthetic_share: float = 0.5  # of the draws made for a tail class, the share that goes to its synthetic samples
    synthetic_weight: float = 1.0  # loss weight of a synthetic sample (a real one weighs 1)
    tau: float = 1.0  # logit-adjusted: the prior's weight tau in f(x) + tau * log(pi / (1 - pi))


class TrainingPool(NamedTuple):
    """What a classifier trains on: the real training rows first, then the synthetic rows of one draw of a set."""

    labels: np.ndarray  # (N + M, K) uint8
    n_real: int  # N
    made_for: np.ndarray  # (M,) int64: the class column of the tail class each synthetic row was made for

    @property
    def n_synthetic(self) -> int:
        return len(self.labels) - self.n_real


def check_scheme(scheme: str, cfg: RebalancingConfig) -> None:
    """A ConfigError for an unknown scheme, or for a mix the scheme cannot draw."""
    if scheme not in SCHEMES:
        raise ConfigError(f"eval.schemes: {scheme!r} is not a training scheme; the schemes are {', '.join(SCHEMES)}.")
    if scheme == "logit-adjusted" and cfg.synthetic_share >= 1:
        raise ConfigError(
            "eval.rebalancing.synthetic_share: 1 leaves no draw of a tail class to its real images, which the "
            "logit-adjusted scheme (passes over every real image, the set added at share / (1 - share) of a class's "
            "positives) cannot draw; choose a share below 1, or train that row under balanced."
        )


class Sampler:
    """Batches of row indices into a :class:`TrainingPool` under a scheme, from ``generator``.

    plain: today's shuffled passes over all N + M rows; balanced: :func:`balanced_draw` over the real rows
    (``balance``: 1 = every class equally often), a share of each tail class's draws handed to its synthetic rows;
    logit-adjusted: passes over the real rows plus m_t synthetic rows of tail class t per pass (see the module).
    """

    def __init__(self, scheme: str, pool: TrainingPool, batch_size: int, generator: torch.Generator,
                 share: float = 0.5, balance: float = 1.0):  # fmt: skip
        self.scheme, self.pool, self.batch_size, self.generator = scheme, pool, batch_size, generator
        self.share, self.balance = share, balance
        real = pool.labels[: pool.n_real]
        self.synthetic = {int(k): torch.from_numpy(pool.n_real + np.flatnonzero(pool.made_for == k))
                          for k in np.unique(pool.made_for)}  # fmt: skip
        if scheme == "logit-adjusted" and self.synthetic:
            positives = real.sum(axis=0)
            self.per_pass = {k: int(round(positives[k] * share / (1 - share))) for k in self.synthetic}
        else:
            self.per_pass = {}
        self.cycles = {k: (torch.randperm(len(rows), generator=generator), 0) for k, rows in self.synthetic.items()
                       if self.per_pass.get(k)}  # fmt: skip
        # the first pass's order is drawn under every scheme (balanced ignores it), as the classifier always drew it:
        # a scheme's real-only row then draws exactly what that row drew before schemes existed
        self.order, self.position = self._pass(), 0

    def _take(self, k: int, m: int) -> torch.Tensor:
        """The next ``m`` synthetic rows of class ``k``, cycling through a permutation renewed at its end."""
        rows, out = self.synthetic[k], []
        order, at = self.cycles[k]
        while m > 0:
            if at == len(order):
                order, at = torch.randperm(len(rows), generator=self.generator), 0
            step = min(m, len(order) - at)
            out.append(rows[order[at : at + step]])
            at, m = at + step, m - step
        self.cycles[k] = (order, at)
        return torch.cat(out)

    def _pass(self) -> torch.Tensor:
        if self.scheme == "logit-adjusted":
            rows = torch.cat([torch.arange(self.pool.n_real), *(self._take(k, m) for k, m in self.per_pass.items() if m)])
            return rows[torch.randperm(len(rows), generator=self.generator)]
        return torch.randperm(len(self.pool.labels), generator=self.generator)

    def __call__(self) -> torch.Tensor:
        """The next batch: (batch_size,) int64 row indices into the pool."""
        if self.scheme == "balanced":
            return self._balanced()
        if self.position + self.batch_size > len(self.order):
            self.order, self.position = self._pass(), 0
        rows = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return rows

    def _balanced(self) -> torch.Tensor:
        rows, columns = balanced_draw(self.pool.labels[: self.pool.n_real], self.batch_size, self.balance, self.generator)
        if not self.synthetic or self.share <= 0:
            return rows
        coins = torch.rand(len(rows), generator=self.generator, dtype=torch.float64) < self.share
        picks = torch.rand(len(rows), generator=self.generator, dtype=torch.float64)
        for k, members in self.synthetic.items():  # a draw for tail class k, if its coin says so: one of k's samples
            hit = coins & (columns == k)
            rows[hit] = members[(picks[hit] * len(members)).long()]
        return rows

    def prior(self) -> np.ndarray:
        """(K,) the share of the draws positive for each class: plain and logit-adjusted over a pass, balanced over
        the real rows as its class draw weighs them (every class equally often)."""
        labels = self.pool.labels.astype(np.float64)
        if self.scheme == "balanced":
            raise ValueError("the balanced scheme needs no prior: its draws are already balanced")
        weights = np.zeros(len(labels))
        weights[: self.pool.n_real] = 1.0
        if self.scheme == "plain":
            weights[self.pool.n_real :] = 1.0
        for k, m in self.per_pass.items():
            rows = self.synthetic[k].numpy()
            weights[rows] += m / len(rows)
        return weights @ labels / weights.sum()


def logit_offsets(prior: np.ndarray, tau: float) -> torch.Tensor:
    """(K,) tau * log(pi / (1 - pi)) (Menon et al. 2021, Eq. 10 for each class as a binary problem); pi clipped to
    [1e-6, 1 - 1e-6] so that a class without (or with only) positives stays finite."""
    pi = np.clip(np.asarray(prior, dtype=np.float64), 1e-6, 1 - 1e-6)
    return torch.from_numpy(tau * np.log(pi / (1 - pi))).float()


def training_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
                  offsets: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Mean BCE of (B, K) logits, shifted by the (K,) logit-adjustment ``offsets``, each sample's terms weighed by
    its (B,) weight; with neither it is the plain mean BCE."""
    if offsets is not None:
        logits = logits + offsets.to(logits.device)
    weight = None if weights is None else weights.to(logits.device)[:, None].expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, targets, weight=weight)
