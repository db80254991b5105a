"""Class-balanced draws of training rows, shared by the demo backbone (bootstrap) and iterated learning.

Tail classes have a few dozen training images among thousands; drawing batches in proportion
to the images lets a network ignore them. :func:`balanced_indices` draws a class first, with
probability ~ count ** (1 - balance), then one of its rows: balance 0 keeps the image
frequencies, 1 draws every class equally often.
"""

from __future__ import annotations

import numpy as np
import torch


def balanced_indices(labels: np.ndarray, n: int, balance: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` row indices drawn class-balanced: class k with probability ~ count_k ** (1 - balance), then a row of it.

    balance 0 reproduces the image frequencies of the classes, 1 draws every class equally
    often (the tail's few images are repeated). Rows without any positive class are drawn
    as if they formed one more class.
    """
    labels = np.asarray(labels, dtype=bool)
    members = [np.flatnonzero(labels[:, k]) for k in range(labels.shape[1])]
    members.append(np.flatnonzero(~labels.any(axis=1)))
    members = [torch.from_numpy(m) for m in members if len(m)]
    counts = torch.tensor([len(m) for m in members], dtype=torch.float64)
    p = counts ** (1.0 - balance)
    groups = torch.multinomial(p / p.sum(), n, replacement=True, generator=generator)
    picks = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([members[g][int(u * len(members[g]))] for g, u in zip(groups.tolist(), picks)])
