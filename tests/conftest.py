"""Fixtures every tier shares (tests/unit, tests/workflow, tests/slurm, tests/gpu); their helpers are tests/helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers.data import write_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def dataset(tmp_path) -> dict:
    """A small valid data set; returns its `data` config section."""
    return write_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (its numbers then match across machines), restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory) -> Path:
    """The tiny workflow of tests/workflow/test_workflow.py run once, locally and uninterrupted, for runs made
    otherwise (on SLURM, resumed after a kill) to be compared with. Read it; never write there."""
    from helpers.workflow import snakemake, write_config

    workdir = tmp_path_factory.mktemp("tiny-reference")
    write_config(workdir)
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir
