"""The learning-rate schedule every training loop shares: linear warm-up, then cosine decay to 0."""

import math

import pytest
import torch

from ltaug.common.schedule import warmup_cosine, warmup_cosine_schedule


@pytest.mark.parametrize("step,factor", [(0, 0.5), (1, 1.0), (2, 1.0), (21, 0.5), (40, 0.0)])
def test_forty_steps_warm_up_over_two_then_decay_by_a_half_cosine(step, factor):
    assert warmup_cosine(step, 40) == pytest.approx(factor, abs=1e-12)  # W = 40 // 20 = 2


def test_fewer_than_twenty_steps_warm_up_over_one():
    assert warmup_cosine(0, 10) == 1.0 and warmup_cosine(1, 10) == 1.0
    assert warmup_cosine(5, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 9)))


def test_the_scheduler_multiplies_the_optimisers_peak_rate():
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = warmup_cosine_schedule(optimiser, 40)
    rates = []
    for _ in range(41):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.05) and rates[1] == pytest.approx(0.1) and rates[21] == pytest.approx(0.05)
    assert rates[40] == pytest.approx(0.0, abs=1e-12)
