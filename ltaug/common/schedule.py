"""The learning-rate schedule of every training loop (the demo model's VAE and UNet, Table 1's classifier).

Linear warm-up over the first 5 % of the steps (at least one), then cosine decay to 0 at the last step:

    factor(s) = (s + 1) / W                                     s < W,   W = max(1, steps // 20)
    factor(s) = (1 + cos(pi * (s - W) / max(1, steps - W))) / 2  otherwise

times the peak learning rate (torch's LambdaLR multiplies the optimiser's lr by it).
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, steps: int) -> float:
    """The factor of step ``step`` (0-based) of ``steps``."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def warmup_cosine_schedule(optimiser: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``optimiser``'s learning rate on :func:`warmup_cosine` over ``steps`` steps (call ``step()`` after each)."""
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: warmup_cosine(step, steps))
