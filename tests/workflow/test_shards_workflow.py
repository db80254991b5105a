"""Sharded stages on the tiny workflow write what one job writes: the image stores (decode_images) and the latent stores (encode_latents)."""

from __future__ import annotations

import numpy as np
import pytest

from ltaug.backbone.latents import open_latents
from ltaug.data.image_store import open_images


@pytest.mark.workflow
@pytest.mark.slow
def test_sharded_workflow_writes_the_image_store_of_the_unsharded_one(tiny_reference, tmp_path):
    """images.shards: 3 on a copy of the tiny reference run with its training image store removed: 3 decode_images
    jobs and a gather_images job, the shards deleted after, and the store one job wrote, value for value."""
    import shutil

    import yaml
    from helpers.workflow import planned_jobs, snakemake

    workdir = tmp_path / "sharded"
    shutil.copytree(tiny_reference, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    size = config["latents"]["image_size"]
    target = f"results/images/train/{size}px.zarr"
    shutil.rmtree(workdir / target)
    config["images"] = {**config.get("images", {}), "shards": 3, "shard_size": 4}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    assert planned_jobs(snakemake(workdir, "--dry-run", target)) == {"decode_images": 3, "gather_images": 1}
    result = snakemake(workdir, target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((workdir / "results/images").glob("shards/*/*/*.zarr")) == []  # temporary: deleted once gathered
    joined, single = open_images(workdir / target), open_images(tiny_reference / target)
    assert dict(joined.attrs) == dict(single.attrs) and joined["ids"][:].tolist() == single["ids"][:].tolist()
    np.testing.assert_array_equal(joined["pixels"][:], single["pixels"][:])


@pytest.mark.workflow
@pytest.mark.slow
def test_sharded_workflow_writes_the_latents_of_the_unsharded_one(tiny_reference, tmp_path):
    """latents.shards: 2 on a copy of the tiny reference run with its latents removed: 2 encode_latents
    jobs and a gather_latents job for the training split, the shards deleted after, and the store of one job."""
    import shutil

    import yaml
    from helpers.same_outputs import differences
    from helpers.workflow import planned_jobs, snakemake

    workdir = tmp_path / "sharded"
    shutil.copytree(tiny_reference, workdir, symlinks=True)
    shutil.rmtree(workdir / "results/latents")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["latents"]["shards"] = 2
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    targets = ["results/latents/train.zarr"]  # the other splits are built the same way

    assert planned_jobs(snakemake(workdir, "--dry-run", *targets)) == {"encode_latents": 2, "gather_latents": 1}
    result = snakemake(workdir, *targets)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((workdir / "results/latents").glob("shards/*/*.zarr")) == []  # temporary: deleted once gathered
    assert (workdir / "logs/latents/gather_latents_train.log").is_file()
    assert (workdir / "logs/latents/encode_latents_train_2-of-2.log").is_file()
    for target in targets:
        joined, single = open_latents(workdir / target), open_latents(tiny_reference / target)
        assert dict(joined.attrs) == dict(single.attrs)
        assert joined["ids"][:].tolist() == single["ids"][:].tolist()
        np.testing.assert_array_equal(joined["labels"][:], single["labels"][:])
        # the shards batch the images differently (batch_size 16): CPU kernels then differ by ~1e-7
        # (see the batch size test); test_gathered_shards_equal_the_unsharded_store checks bit equality
        np.testing.assert_allclose(joined["z"][:], single["z"][:], rtol=1e-5, atol=1e-5)
    assert [d for d in differences(workdir / "results", tiny_reference / "results") if "latents/" not in d] == []

    assert "Nothing to be done" in snakemake(workdir, "--dry-run", *targets).stdout
    config["latents"]["mode"] = "mean"  # the shards are gone (temp), yet a change that re-encodes reruns them
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert planned_jobs(snakemake(workdir, "--dry-run", *targets)) == {"encode_latents": 2, "gather_latents": 1}
