"""Stage decode_images: every image read once per size into a Zarr store, and the reader every later stage uses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image

from ltaug.common.errors import InputError
from ltaug.common.images import load_image, set_window
from ltaug.data.image_store import (
    ImageStores,
    ImagesConfig,
    decode_split,
    gather_images,
    open_images,
    read_images,
    store_path,
)


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    """9 images of three shapes and modes (40 x 30 RGB, 24 x 24 gray, 16-bit gray), 6 train and 3 val rows."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(9):
        path = tmp_path / "files" / f"im{i}.png"
        path.parent.mkdir(exist_ok=True)
        if i % 3 == 0:
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
        elif i % 3 == 1:
            Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(path)
        else:
            Image.fromarray(rng.integers(0, 4096, (24, 24)).astype(np.uint16)).save(path)  # 12 bits in 16
        rows.append({"id": f"im{i}", "path": str(path), "split": "train" if i < 6 else "val", "A": i % 2})
    return pd.DataFrame(rows)


def test_the_store_holds_each_image_as_load_image_reads_it_in_manifest_order(manifest, tmp_path):
    store = store_path(tmp_path / "images", "train", 16)
    assert decode_split(manifest, "train", 16, store, ImagesConfig(batch_size=4, shard_size=4)) == 6
    group = open_images(store, {"split": "train", "image_size": 16})
    assert group["ids"][:].tolist() == [f"im{i}" for i in range(6)]
    expected = np.stack([load_image(p, 16) for p in manifest["path"][:6]])
    np.testing.assert_array_equal(group["pixels"][:], expected)
    assert group["pixels"].chunks == (1, 16, 16)  # one image a chunk: a random read decompresses one image
    assert dict(group.attrs) == {"split": "train", "image_size": 16, "resample": "bilinear", "window": None, "complete": True}
    assert [p.name for p in store.parent.iterdir()] == ["16px.zarr"]  # nothing temporary left beside it


def test_the_window_is_applied_once_when_the_store_is_written(manifest, tmp_path):
    try:
        set_window([0, 4095])
        decode_split(manifest, "train", 24, store_path(tmp_path, "train", 24), ImagesConfig())
        windowed = load_image(manifest["path"][2], 24)
    finally:
        set_window(None)
    group = open_images(store_path(tmp_path, "train", 24))
    assert group.attrs["window"] == [0.0, 4095.0]
    raw = np.asarray(Image.open(manifest["path"][2]), dtype=np.float64)
    np.testing.assert_array_equal(group["pixels"][2], np.round(raw / 4095 * 255).astype(np.uint8))
    np.testing.assert_array_equal(group["pixels"][2], windowed)
    assert not np.array_equal(windowed, load_image(manifest["path"][2], 24))  # without it: the image's own range


@pytest.mark.parametrize("shards", [2, 3, 5])
def test_shards_gathered_equal_the_store_of_one_job(manifest, tmp_path, shards):
    cfg = ImagesConfig(batch_size=3, shard_size=2)
    decode_split(manifest, "train", 16, tmp_path / "one.zarr", cfg)
    parts = [tmp_path / f"{s}-of-{shards}.zarr" for s in range(1, shards + 1)]
    for s, part in enumerate(parts, start=1):
        decode_split(manifest, "train", 16, part, cfg, shard=(s, shards))
    expect = {"split": "train", "image_size": 16, "split_rows": 6}
    assert gather_images(parts, tmp_path / "joined.zarr", cfg.shard_size, expect) == 6
    one, joined = zarr.open_group(tmp_path / "one.zarr"), zarr.open_group(tmp_path / "joined.zarr")
    np.testing.assert_array_equal(one["pixels"][:], joined["pixels"][:])
    assert one["ids"][:].tolist() == joined["ids"][:].tolist() and dict(one.attrs) == dict(joined.attrs)
    with pytest.raises(InputError, match="expected shard 1 of"):
        gather_images(parts[::-1], tmp_path / "wrong.zarr", cfg.shard_size, expect)
    assert not (tmp_path / "wrong.zarr").exists()


def test_an_unreadable_image_names_its_manifest_line_and_leaves_no_store(manifest, tmp_path):
    Image.open(manifest["path"][4]).save(manifest["path"][4])
    with open(manifest["path"][4], "r+b") as handle:
        handle.truncate(40)
    store = store_path(tmp_path / "images", "train", 16)
    with pytest.raises(InputError, match=r"im4\.png \(m\.csv line 6, id 'im4'\).*truncated"):
        decode_split(manifest, "train", 16, store, ImagesConfig(batch_size=2, shard_size=2), source="m.csv")
    assert not store.exists() and list(store.parent.iterdir()) == []


def test_a_split_without_rows_is_an_error(manifest, tmp_path):
    with pytest.raises(InputError, match=r"m\.csv: no rows of split 'test' \(splits present: train, val\)"):
        decode_split(manifest, "test", 16, tmp_path / "x.zarr", ImagesConfig(), source="m.csv")
    assert not (tmp_path / "x.zarr").exists()


def test_stores_read_rows_in_table_order_across_splits_and_as_the_files_give_them(manifest, tmp_path):
    root = tmp_path / "images"
    for split in ("train", "val"):
        decode_split(manifest, split, 16, store_path(root, split, 16), ImagesConfig(shard_size=2))
    table = manifest.iloc[[7, 2, 2, 0, 8, 5]]
    stores = ImageStores(root)
    expected = np.stack([load_image(p, 16) for p in table["path"]])
    np.testing.assert_array_equal(stores.read(table, 16), expected)
    np.testing.assert_array_equal(read_images(table, 16, None), expected)  # outside the workflow: the files
    assert stores.read(table.iloc[:0], 16).shape == (0, 16, 16)
    stores.check("val", 16, ["im6", "im7", "im8"], "m.csv")
    with pytest.raises(InputError, match=r"its 3 images are not the 2 rows of split 'val' of m\.csv.*rerun decode_images"):
        stores.check("val", 16, ["im6", "im7"], "m.csv")


def test_a_store_of_another_manifest_size_or_an_unfinished_run_is_refused(manifest, tmp_path):
    root = tmp_path / "images"
    decode_split(manifest, "train", 16, store_path(root, "train", 16), ImagesConfig())
    other = manifest.assign(id=manifest["id"] + "x")
    with pytest.raises(InputError, match=r"train/16px\.zarr: no image of id 'im0x' \(6 ids asked for missing\).*rerun decode_images"):
        ImageStores(root).read(other[other["split"] == "train"], 16)
    with pytest.raises(InputError, match=r"val/16px\.zarr: no image store here; run the decode_images stage"):
        ImageStores(root).read(manifest[manifest["split"] == "val"], 16)
    with pytest.raises(InputError, match=r"made with image_size=16, but this stage needs image_size=32"):
        open_images(store_path(root, "train", 16), {"image_size": 32})
    group = zarr.open_group(store_path(root, "train", 16), mode="r+")
    group.attrs["complete"] = False
    with pytest.raises(InputError, match="made by a run that did not finish; delete it and rerun decode_images"):
        ImageStores(root).read(manifest.iloc[:1], 16)


def test_the_classifier_reads_real_rows_from_the_stores_and_synthetic_images_from_their_files(manifest, tmp_path):
    from ltaug.data.image_source import ImageSource

    root = tmp_path / "images"
    decode_split(manifest, "train", 16, store_path(root, "train", 16), ImagesConfig())
    synthetic = tmp_path / "synthetic.png"
    Image.fromarray(np.full((16, 16, 3), 7, dtype=np.uint8)).save(synthetic)
    train = manifest[manifest["split"] == "train"]
    for cache in (False, True):
        stored = ImageSource(16, cache, 2, ImageStores(root), train, [str(synthetic)])
        files = ImageSource(16, cache, 2, None, train, [str(synthetic)])
        assert len(stored) == 7 and stored.paths == [*train["path"], str(synthetic)]
        order = np.array([6, 3, 0, 3])
        batch = stored.batch(order)
        assert batch.shape == (4, 1, 16, 16) and (batch[0] == 7).all()
        np.testing.assert_array_equal(batch.numpy(), files.batch(order).numpy())
        np.testing.assert_array_equal(batch[1, 0].numpy(), load_image(train["path"].iloc[3], 16))
