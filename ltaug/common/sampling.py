"""Class-balanced draws of training rows, shared by the demo backbone (bootstrap), iterated learning and the
classifier's balanced scheme.

Tail classes have a few dozen training images among thousands; drawing batches in proportion
to the images lets a network ignore them. :func:`balanced_indices` draws a class first, with
probability ~ count ** (1 - balance), then one of its rows: balance 0 keeps the image
frequencies, 1 draws every class equally often. :func:`balanced_draw` also says which class
each row was drawn for, so that a caller can hand some of a class's draws to other rows of it
(the synthetic samples of a tail class, :mod:`ltaug.evaluation.schemes`).
"""

from __future__ import annotations

import numpy as np
import torch

NO_CLASS = -1  # the class column of a draw made for the rows without any positive class


def balanced_draw(
    labels: np.ndarray, n: int, balance: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns): ``n`` row indices drawn class-balanced, and the (n,) class column each was drawn for
    (:data:`NO_CLASS` for the rows without a positive class).

    Class k is drawn with probability ~ count_k ** (1 - balance), then one of its rows uniformly:
    balance 0 reproduces the image frequencies of the classes, 1 draws every class equally often
    (the tail's few images are repeated). Rows without any positive class are drawn as if they
    formed one more class; a class without rows is never drawn.
    """
    labels = np.asarray(labels, dtype=bool)
    members = [np.flatnonzero(labels[:, k]) for k in range(labels.shape[1])]
    members.append(np.flatnonzero(~labels.any(axis=1)))
    columns = [k if k < labels.shape[1] else NO_CLASS for k, m in enumerate(members) if len(m)]
    members = [torch.from_numpy(m) for m in members if len(m)]
    counts = torch.tensor([len(m) for m in members], dtype=torch.float64)
    p = counts ** (1.0 - balance)
    groups = torch.multinomial(p / p.sum(), n, replacement=True, generator=generator)
    picks = torch.rand(n, generator=generator, dtype=torch.float64)
    rows = torch.stack([members[g][int(u * len(members[g]))] for g, u in zip(groups.tolist(), picks)])
    return rows, torch.tensor(columns, dtype=torch.int64)[groups]


def balanced_indices(labels: np.ndarray, n: int, balance: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` row indices drawn class-balanced (:func:`balanced_draw` without the classes)."""
    return balanced_draw(labels, n, balance, generator)[0]
