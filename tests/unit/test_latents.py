"""Tests of ltaug.backbone.latents on a tiny seeded AutoencoderKL and 32x32 images (CPU, a few seconds each)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ltaug.backbone import latents
from ltaug.backbone.latents import (
    LatentsConfig,
    decode_latents,
    encode_images,
    encode_split,
    open_latents,
    to_rgb_pixels,
    to_vae_input,
)
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.images import load_image
from ltaug.common.shards import SHARD_KEYS, block_rows, shard_rows

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["Cardiomegaly", "Nodule"]
MODEL = {"path": "models/tiny", "fingerprint": "abc123"}
TINY_VAE = """
import torch
attention = globals().get("attention", True)
from diffusers import AutoencoderKL
torch.manual_seed(0)
vae = AutoencoderKL(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
    latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.5, mid_block_add_attention=attention,
).eval()
"""


def tiny_vae(attention: bool = True):
    """A seeded 4-level AutoencoderKL with 8 channels (32x32 -> 4x4x4) and scaling_factor 0.5."""
    scope: dict = {"attention": attention}
    exec(TINY_VAE, scope)
    return scope["vae"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread in this module


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


def write_images(root: Path, n: dict[str, int]) -> pd.DataFrame:
    """32x32 PNGs (RGB and grayscale alternating) and their manifest frame, as read_manifest gives it."""
    rng = np.random.default_rng(0)
    rows = []
    for split, count in n.items():
        for i in range(count):
            path = root / split / f"{split}-{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            shape = (32, 32, 3) if i % 2 == 0 else (32, 32)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
            rows.append({"id": f"{split}-{i:03d}", "path": str(path), "split": split,
                         "Cardiomegaly": int(i % 3 == 0), "Nodule": int(i == 1)})  # fmt: skip
    return pd.DataFrame(rows).astype({c: np.uint8 for c in CLASSES})


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    return write_images(tmp_path / "images", {"val": 3, "train": 10})


def load_batch(frame: pd.DataFrame, split: str, size: int = 32) -> torch.Tensor:
    rows = frame[frame["split"] == split]
    return to_vae_input(np.stack([load_image(p, size) for p in rows["path"]]))  # stored grayscale


# ---------------------------------------------------------------------------- the VAE's input


def test_vae_input_maps_two_levels_to_minus_one_and_one_in_three_equal_channels():
    pixels = np.zeros((2, 32, 32), dtype=np.uint8)
    pixels[:, ::2] = 255  # even rows white
    x = to_vae_input(pixels)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grayscale repeated into RGB
    assert torch.all(x[:, :, ::2] == 1.0) and torch.all(x[:, :, 1::2] == -1.0)
    np.testing.assert_array_equal(to_rgb_pixels(pixels)[..., 1], pixels)  # and back to (B, H, W, 3) uint8


@pytest.mark.parametrize("transpose", [False, True])
def test_load_image_resizes_the_shorter_side_and_keeps_the_centre(tmp_path, transpose):
    # 48 x 24 (or 24 x 48): black | white centre square (columns 12..35) | black
    pixels = np.zeros((24, 48), dtype=np.uint8)
    pixels[:, 12:36] = 255
    if transpose:
        pixels = pixels.T.copy()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", 32).astype(float)  # (32, 32)
    if transpose:
        x = x.T
    assert x.shape == (32, 32)
    # the centre square fills the crop; only the filter's support at the borders reaches the black
    assert (x[:, 2:30] > 240).all(), x[0]
    assert (x[:, [0, 31]] > 128).all()
    np.testing.assert_allclose(x, x[:, ::-1], atol=1)  # cut equally on both sides
    assert x.mean() > 242  # a left-aligned crop would have kept the black band


def test_load_image_reads_an_rgb_jpeg_of_another_size_as_its_luma(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.full((40, 50, 3), 128, dtype=np.uint8)).save(path, quality=95)
    x = load_image(path, 32)
    assert x.shape == (32, 32) and x.dtype == np.uint8 and np.abs(x.astype(int) - 128).max() <= 2


def test_load_image_scales_16_bit_images_by_their_range(tmp_path):
    wide = np.array([[0, 257 * 10, 257 * 200, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    np.testing.assert_array_equal(load_image(tmp_path / "w.png", 4)[0], [0, 10, 200, 255])


@pytest.mark.parametrize(
    "key, value", [("image_size", 100), ("image_size", 0), ("mode", "median"), ("batch_size", 0), ("seed", -1)]
)
def test_config_rejects_bad_values(key, value):
    with pytest.raises(ConfigError, match=f"latents.{key}"):
        LatentsConfig(**{key: value})


# ---------------------------------------------------------------------------- encode / decode


def test_decode_inverts_the_scaling(vae, manifest):
    x = load_batch(manifest, "train")[:5]
    z = encode_images(vae, x, "mean", seed=0, first_index=0)
    assert z.shape == (5, 4, 4, 4) and z.dtype == torch.float32
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        torch.testing.assert_close(z, 0.5 * mean, atol=0, rtol=0)
        reference = vae.decode(mean).sample
        wrong = vae.decode(0.5 * mean).sample  # what a missing division would give
    to_uint8 = lambda t: ((t / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    images = decode_latents(vae, z, batch_size=16)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, to_uint8(reference))
    assert np.abs(to_uint8(wrong).astype(int) - images).max() > 2  # the test would catch it
    # in batches of 2: the same images up to float rounding in the convolutions
    assert np.abs(decode_latents(vae, z, batch_size=2).astype(int) - images).max() <= 1


def test_sample_mode_is_mean_plus_seeded_noise(vae, manifest):
    x = load_batch(manifest, "train")[:4]
    mean = encode_images(vae, x, "mean", seed=0, first_index=0)
    a = encode_images(vae, x, "sample", seed=3, first_index=5)
    with torch.no_grad():
        std = vae.encode(x).latent_dist.std
    eps = torch.stack([torch.from_numpy(np.random.default_rng([3, 5 + i]).standard_normal((4, 4, 4), dtype=np.float32))
                       for i in range(4)])  # fmt: skip
    torch.testing.assert_close(a, mean + 0.5 * std * eps)
    assert not torch.allclose(a, mean, atol=1e-3)
    assert torch.equal(a, encode_images(vae, x, "sample", seed=3, first_index=5))  # reproducible
    assert not torch.allclose(a, encode_images(vae, x, "sample", seed=4, first_index=5), atol=1e-3)  # seed matters
    torch.testing.assert_close(a[1:], encode_images(vae, x[1:], "sample", seed=3, first_index=6))  # per image


# ---------------------------------------------------------------------------- the store


def test_store_contents(vae, manifest, tmp_path):
    store = tmp_path / "latents" / "train.zarr"
    cfg = LatentsConfig(image_size=32, mode="mean", batch_size=10, chunk_size=4)
    encode_split(manifest, "train", vae, store, cfg, MODEL, "cpu")
    group = open_latents(store)
    train = manifest[manifest["split"] == "train"]
    z = group["z"][:]
    assert z.dtype == np.float32 and z.shape == (10, 4, 4, 4)
    np.testing.assert_array_equal(z, encode_images(vae, load_batch(manifest, "train"), "mean", 0, 0).numpy())
    assert group["labels"].dtype == np.uint8
    np.testing.assert_array_equal(group["labels"][:], train[CLASSES].to_numpy())
    assert group["ids"][:].tolist() == train["id"].tolist() == [f"train-{i:03d}" for i in range(10)]
    assert group["ids"][:].dtype.kind == "T"  # numpy's variable-width string dtype
    assert dict(group.attrs) == {
        "classes": CLASSES, "split": "train", "model_path": "models/tiny", "model_fingerprint": "abc123",
        "scaling_factor": 0.5, "shift_factor": None, "image_size": 32, "mode": "mean", "seed": 0, "complete": True,
    }  # fmt: skip
    for name in ("z", "labels", "ids"):
        (codec,) = group[name].compressors
        assert (codec.cname.value, codec.clevel, codec.shuffle.value) == ("zstd", 5, "shuffle")
        assert group[name].chunks[0] == 4
    assert sorted(p.name for p in store.parent.iterdir()) == ["train.zarr"]  # no temporary left


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("mode", ["mean", "sample"])
def test_batch_size_does_not_change_the_latents(vae, manifest, tmp_path, mode):
    def run(model, batch_size):
        store = tmp_path / f"{mode}-{batch_size}.zarr"
        cfg = LatentsConfig(image_size=32, mode=mode, seed=1, batch_size=batch_size, chunk_size=4)
        encode_split(manifest, "train", model, store, cfg, MODEL, "cpu")
        return open_latents(store)["z"][:]

    # CPU kernels (oneDNN convolutions, batched matmuls in attention) block by batch size: ~1e-7 apart
    torch.testing.assert_close(run(vae, 1), run(vae, 7), atol=1e-5, rtol=1e-5)
    # without those kernels the code itself adds no dependence on the batching: equal bit for bit
    plain = tiny_vae(attention=False)
    with torch.backends.mkldnn.flags(enabled=False):
        np.testing.assert_array_equal(run(plain, 1), run(plain, 7))


def test_other_sizes_are_resized(vae, manifest, tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    frame = pd.concat([manifest, pd.DataFrame([{"id": "big", "path": str(path), "split": "test",
                                                "Cardiomegaly": 1, "Nodule": 0}])], ignore_index=True)  # fmt: skip
    encode_split(frame, "test", vae, tmp_path / "test.zarr", LatentsConfig(image_size=32), MODEL, "cpu")
    group = open_latents(tmp_path / "test.zarr")
    assert group["z"].shape == (1, 4, 4, 4) and group["ids"][:].tolist() == ["big"]


def test_corrupt_image_names_the_file_and_row(vae, manifest, tmp_path):
    bad = manifest["path"][5]  # train-002, line 7 of the manifest
    Path(bad).write_bytes(Path(bad).read_bytes()[:60])
    store = tmp_path / "train.zarr"
    with pytest.raises(InputError, match=r"train-002\.png \(results/data/manifest\.csv, id 'train-002'\)"):
        encode_split(manifest, "train", vae, store, LatentsConfig(image_size=32, batch_size=2), MODEL, "cpu",
                     source="results/data/manifest.csv")  # fmt: skip
    assert list(tmp_path.glob("*.zarr")) == [] and list(tmp_path.glob(".train.zarr*")) == []


def test_unknown_split(vae, manifest, tmp_path):
    with pytest.raises(InputError, match=r"no rows of split 'tset' \(splits present: train, val\)"):
        encode_split(manifest, "tset", vae, tmp_path / "x.zarr", LatentsConfig(image_size=32), MODEL, "cpu")


def test_failure_midway_leaves_nothing_and_rerun_completes(vae, manifest, tmp_path, monkeypatch):
    cfg = LatentsConfig(image_size=32, mode="sample", batch_size=2, chunk_size=2)
    encode_split(manifest, "train", vae, tmp_path / "reference.zarr", cfg, MODEL, "cpu")
    calls = []
    real = latents.encode_images

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    store = tmp_path / "train.zarr"
    monkeypatch.setattr(latents, "encode_images", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        encode_split(manifest, "train", vae, store, cfg, MODEL, "cpu")
    assert not store.exists() and list(tmp_path.glob(".train.zarr*")) == []
    monkeypatch.setattr(latents, "encode_images", real)
    encode_split(manifest, "train", vae, store, cfg, MODEL, "cpu")
    np.testing.assert_array_equal(open_latents(store)["z"][:], open_latents(tmp_path / "reference.zarr")["z"][:])


KILLED_RUN = TINY_VAE + """
import sys, time
import pandas as pd
from ltaug.backbone import latents
manifest, store, marker = sys.argv[1:4]
real, calls = latents.encode_images, []
def slow(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        open(marker, "w").close()
        time.sleep(120)
    return real(*args, **kwargs)
latents.encode_images = slow
frame = pd.read_csv(manifest, dtype={"id": str})
cfg = latents.LatentsConfig(image_size=32, mode="sample", batch_size=2, chunk_size=2)
latents.encode_split(frame, "train", vae, store, cfg, {"path": "models/tiny", "fingerprint": "abc123"}, "cpu")
"""


def test_killed_run_leaves_no_store_and_rerun_completes(vae, manifest, tmp_path):
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "killed.py").write_text(KILLED_RUN)
    store, marker = tmp_path / "out" / "train.zarr", tmp_path / "third-batch"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, str(tmp_path / "killed.py"), str(tmp_path / "manifest.csv"),
                              str(store), str(marker)], env=env, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached its third batch"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert not store.exists()
    (left,) = store.parent.glob(f".train.zarr.tmp-{child.pid}")  # the killed run's temporary
    with pytest.raises(InputError, match="did not finish; delete it and rerun encode_latents"):
        open_latents(left)

    cfg = LatentsConfig(image_size=32, mode="sample", batch_size=2, chunk_size=2)
    encode_split(manifest, "train", vae, store, cfg, MODEL, "cpu")
    encode_split(manifest, "train", vae, tmp_path / "reference.zarr", cfg, MODEL, "cpu")
    np.testing.assert_array_equal(open_latents(store)["z"][:], open_latents(tmp_path / "reference.zarr")["z"][:])


# ---------------------------------------------------------------------------- open_latents


@pytest.fixture
def store(vae, manifest, tmp_path) -> Path:
    path = tmp_path / "val.zarr"
    encode_split(manifest, "val", vae, path, LatentsConfig(image_size=32), MODEL, "cpu")
    return path


def test_open_latents_accepts_matching_expectations(store):
    group = open_latents(store, expect={"model_fingerprint": "abc123", "image_size": 32, "mode": "sample",
                                        "classes": tuple(CLASSES)})  # fmt: skip
    assert group["z"].shape == (3, 4, 4, 4)


def test_open_latents_refuses_another_model(store):
    expect = {"model_path": "models/roentgen", "model_fingerprint": "fff999", "image_size": 32}
    with pytest.raises(InputError) as err:
        open_latents(store, expect)
    message = str(err.value)
    assert "made by model models/tiny (fingerprint abc123)" in message
    assert "now uses model models/roentgen (fingerprint fff999)" in message
    assert "rerun encode_latents" in message and str(store) in message


def test_open_latents_refuses_another_image_size(store):
    with pytest.raises(InputError, match=r"made with image_size=32 but the workflow now uses image_size=256"):
        open_latents(store, {"model_fingerprint": "abc123", "image_size": 256})


def test_open_latents_refuses_missing_and_incomplete_stores(store, tmp_path):
    with pytest.raises(InputError, match="no latent store here; run the encode_latents stage"):
        open_latents(tmp_path / "nothing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError, match="not a readable Zarr store"):
        open_latents(tmp_path / "empty.zarr")
    import zarr

    zarr.open_group(store, mode="r+").attrs["complete"] = False
    with pytest.raises(InputError, match="made by a run that did not finish"):
        open_latents(store)


# ---------------------------------------------------------------------------- shards


@pytest.mark.parametrize("n,shards", [(10, 1), (10, 3), (10, 4), (3, 5), (0, 2), (377_000, 64)])
def test_shard_rows_cover_the_split_in_order(n, shards):
    bounds = [shard_rows(n, s, shards) for s in range(1, shards + 1)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))  # contiguous, in order
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n


def test_shard_rows_values_and_bad_shards():
    assert [shard_rows(10, s, 3) for s in (1, 2, 3)] == [(0, 3), (3, 6), (6, 10)]
    assert [shard_rows(3, s, 5) for s in range(1, 6)] == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3)]
    for shard, shards in ((0, 3), (4, 3), (1, 0)):
        with pytest.raises(ConfigError, match=rf"shard {shard} of {shards}: expected 1 <= shard <= shards \(latents.shards\)"):
            shard_rows(10, shard, shards)


def test_block_rows_take_whole_blocks():
    assert [block_rows(10, 3, s, 3) for s in (1, 2, 3)] == [(0, 3), (3, 6), (6, 10)]
    assert [block_rows(40, 16, s, 2) for s in (1, 2)] == [(0, 16), (16, 40)]
    assert [block_rows(5, 16, s, 2) for s in (1, 2)] == [(0, 0), (0, 5)]
    with pytest.raises(ConfigError, match=r"\(cam.shards\)"):
        block_rows(10, 3, 0, 2, key="cam.shards")


def encode_shards(manifest, vae, root: Path, shards: int, cfg: LatentsConfig) -> list[Path]:
    paths = [root / f"shards/train/{s}-of-{shards}.zarr" for s in range(1, shards + 1)]
    for s, path in enumerate(paths, start=1):
        encode_split(manifest, "train", vae, path, cfg, MODEL, "cpu", shard=(s, shards))
    return paths


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("shards,rows", [(2, [6, 4]), (3, [3, 3, 4]), (6, [0, 3, 3, 0, 3, 1])])
def test_gathered_shards_equal_the_unsharded_store(manifest, tmp_path, shards, rows):
    # batch_size 3 over 10 images: shards take whole batches, so every image is encoded in the
    # same batch as by the single job (oneDNN's kernels depend on the batch, see the batch size
    # test) with the same per-image noise index: they must agree bit for bit.
    vae = tiny_vae(attention=False)
    cfg = LatentsConfig(image_size=32, mode="sample", seed=5, batch_size=3, chunk_size=4)
    encode_split(manifest, "train", vae, tmp_path / "single.zarr", cfg, MODEL, "cpu")
    parts = encode_shards(manifest, vae, tmp_path, shards, cfg)
    assert [open_latents(p)["z"].shape[0] for p in parts] == rows
    second = open_latents(parts[1])
    assert {k: second.attrs[k] for k in SHARD_KEYS} == {"shard": 2, "shards": shards,
                                                                "first_row": rows[0], "split_rows": 10}  # fmt: skip

    assert latents.gather_shards(parts, tmp_path / "train.zarr", cfg.chunk_size) == 10
    single, joined = open_latents(tmp_path / "single.zarr"), open_latents(tmp_path / "train.zarr")
    assert dict(joined.attrs) == dict(single.attrs)  # no shard keys, complete
    for name in ("z", "labels", "ids"):
        np.testing.assert_array_equal(joined[name][:], single[name][:])
        assert joined[name].dtype == single[name].dtype and joined[name].chunks == single[name].chunks
        assert joined[name].compressors == single[name].compressors
    assert not np.array_equal(joined["z"][:], encode_images(vae, load_batch(manifest, "train"), "mean", 0, 0).numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "shards", "single.zarr", "train.zarr"]  # no temporary


def test_gather_streams_whole_chunks(vae, manifest, tmp_path, monkeypatch):
    from ltaug.common.shards import ChunkWriter

    cfg = LatentsConfig(image_size=32, mode="mean", batch_size=4, chunk_size=2)
    parts = encode_shards(manifest, vae, tmp_path, 3, cfg)  # 4, 4, 2 rows: whole batches
    reads, writes = [], []
    real_append, real_flush = ChunkWriter.append, ChunkWriter.flush

    def append(self, **rows):
        reads.append(len(rows["ids"]))
        real_append(self, **rows)
        writes.append(sum(len(v) for v in self.buffer["ids"]))  # rows held after the append

    def flush(self, final=True):
        start = self.start
        real_flush(self, final)
        assert final or (self.start - start) % self.chunk == 0  # whole chunks until the end

    monkeypatch.setattr(ChunkWriter, "append", append)
    monkeypatch.setattr(ChunkWriter, "flush", flush)
    latents.gather_shards(parts, tmp_path / "train.zarr", chunk_size=2)
    assert reads == [2, 2, 2, 2, 2]  # one shard chunk at a time
    assert max(writes) < 2  # never more than a chunk held back
    np.testing.assert_array_equal(
        open_latents(tmp_path / "train.zarr")["z"][:], np.concatenate([open_latents(p)["z"][:] for p in parts])
    )


def test_gather_refuses_shards_out_of_order_missing_or_from_other_settings(vae, manifest, tmp_path):
    cfg = LatentsConfig(image_size=32, mode="mean", batch_size=4, chunk_size=4)
    parts = encode_shards(manifest, vae, tmp_path, 3, cfg)
    out = tmp_path / "train.zarr"
    with pytest.raises(InputError, match=rf"{parts[1]}: expected shard 1 of 3 starting at row 0 of its split, found "
                                         r"shard 2 of 3 starting at row 4; delete the shard stores"):  # fmt: skip
        latents.gather_shards([parts[1], parts[0], parts[2]], out, 4)
    with pytest.raises(InputError, match=r"1-of-3.zarr: expected shard 1 of 2 starting at row 0 of its split, found "
                                         r"shard 1 of 3 starting at row 0"):  # fmt: skip
        latents.gather_shards(parts[:2], out, 4)
    other = tmp_path / "other" / "2-of-3.zarr"
    encode_split(manifest, "train", vae, other, LatentsConfig(image_size=32, mode="sample", batch_size=4, chunk_size=4), MODEL,
                 "cpu", shard=(2, 3))  # fmt: skip
    with pytest.raises(InputError, match=rf"{other}: made with other settings than {parts[0]} \(mode differ\)"):
        latents.gather_shards([parts[0], other, parts[2]], out, 4)
    with pytest.raises(InputError, match=r"made by model models/tiny \(fingerprint abc123\) but the workflow now uses"):
        latents.gather_shards(parts, out, 4, expect={"model_path": "models/x", "model_fingerprint": "fff"})
    with pytest.raises(InputError, match=r"made with split_rows=10 but the workflow now uses split_rows=11"):
        latents.gather_shards(parts, out, 4, expect={"split_rows": 11})
    with pytest.raises(InputError, match="no latent store here"):
        latents.gather_shards([parts[0], tmp_path / "nowhere.zarr", parts[2]], out, 4)
    import zarr

    for path in parts:  # as if the split had lost a row: the shards no longer add up
        zarr.open_group(path, mode="r+").attrs["split_rows"] = 11
    with pytest.raises(InputError, match=r"3-of-3.zarr: the 3 shards hold 10 rows but their split has 11"):
        latents.gather_shards(parts, out, 4)
    assert not out.exists() and list(tmp_path.glob(".train.zarr*")) == []
