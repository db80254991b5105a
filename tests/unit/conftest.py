"""Fixtures of the unit tier: the IL tests' latent stores and trained run, made once per session."""

from __future__ import annotations


import pytest
from helpers.data import synthetic_latents, write_latent_store

from ltaug.method.train_il import train_iterated
from helpers.il import CLASSES, CPU, PREVALENCE, SPLIT, TINY


@pytest.fixture(scope="session")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    z, y = synthetic_latents(256, PREVALENCE, seed=0)
    zv, yv = synthetic_latents(96, PREVALENCE, seed=1)
    train = write_latent_store(root / "train.zarr", z, y, CLASSES, "train", chunk=64)
    val = write_latent_store(root / "val.zarr", zv, yv, CLASSES, "val", chunk=64)
    return train, val


@pytest.fixture(scope="session")
def trained(stores, tmp_path_factory):
    train, val = stores
    outdir = tmp_path_factory.mktemp("il")
    result = train_iterated(train, val, SPLIT, outdir, TINY, CPU)
    return outdir, result
