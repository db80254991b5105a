"""Baselines: SMOTE (checked against imbalanced-learn), resampling, text-to-image, as synthetic sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from PIL import Image
from helpers.stage_models import save_tiny_sd

from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.bootstrap_models import build_vae
from ltaug.backbone.latents import decode_latents
from ltaug.backbone.model_dir import load_stable_diffusion
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.images import load_image
from ltaug.data.synthetic import read_synthetic_set
from ltaug.evaluation.baselines import (
    BaselinesConfig,
    balanced_repeats,
    make_oracle,
    make_resample,
    make_smote,
    make_text_to_image,
    noise_generator,
    smote_draws,
    smote_interpolate,
)

CLASSES = ["Cardiomegaly", "Nodule", "Fracture", "No Finding"]
TAIL = ["Nodule", "Fracture"]
TINY = BootstrapConfig(
    image_size=32, vae_channels=(8, 8, 8, 8), vae_norm_groups=4, unet_channels=(16, 32), unet_cross_attention=(True, True),
    unet_norm_groups=8, unet_attention_heads=2, text_hidden_size=16, text_layers=1, text_heads=2,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread in this module


# ---------------------------------------------------------------------------- SMOTE


def test_smote_matches_imbalanced_learn_on_a_single_label_problem():
    from imblearn.over_sampling import SMOTE

    rng = np.random.default_rng(0)
    minority = rng.normal(size=(15, 6))  # (m, D)
    majority = rng.normal(3, 1, size=(60, 6))
    x = np.concatenate([majority, minority])
    y = np.array([0] * 60 + [1] * 15)
    n, k, seed = 40, 4, 11
    x_res, y_res = SMOTE(sampling_strategy={1: 15 + n}, k_neighbors=k, random_state=seed).fit_resample(x, y)
    theirs = x_res[len(x):]  # imbalanced-learn appends the synthetic rows
    assert (y_res[len(x):] == 1).all() and theirs.shape == (n, 6)

    rows, neighbours, steps = smote_draws(minority, n, k, seed)
    ours = smote_interpolate(minority, rows, neighbours, steps)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    # every sample lies on the segment from its row towards one of the row's k nearest neighbours
    d = ((minority[:, None] - minority[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    knn = np.argsort(d, axis=1)[:, :k]
    assert all(nb in knn[r] for r, nb in zip(rows, neighbours))
    assert ((steps >= 0) & (steps < 1)).all()


def test_smote_interpolation_on_hand_made_points():
    x = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 4.0]])
    out = smote_interpolate(x, np.array([0, 2]), np.array([1, 1]), np.array([0.25, 0.5]))
    assert out.tolist() == [[2.5, 0.0], [5.0, 2.0]]
    z = np.arange(2 * 4 * 2 * 2, dtype=float).reshape(2, 4, 2, 2)  # latents keep their shape
    assert np.allclose(smote_interpolate(z, np.array([0]), np.array([1]), np.array([0.5]))[0], (z[0] + z[1]) / 2)


def test_smote_of_a_single_point_copies_it():
    rows, neighbours, steps = smote_draws(np.ones((1, 3)), 5, 5, 0)
    assert rows.tolist() == [0] * 5 and neighbours.tolist() == [0] * 5


def latent_store(path, z, labels, ids):
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.create_array("z", data=z)
    root.create_array("labels", data=labels)
    root.create_array("ids", shape=(len(ids),), dtype=str)[:] = np.array(ids, dtype=object)
    return zarr.open_group(path, mode="r")


def test_smote_set_takes_the_union_of_the_pairs_labels_and_decodes_the_interpolation(tmp_path):
    torch.manual_seed(0)
    vae = build_vae(TINY).eval()
    rng = np.random.default_rng(1)
    labels = np.zeros((10, 4), dtype=np.uint8)
    labels[:4, 1] = 1  # 4 nodules, two of them also with cardiomegaly
    labels[[0, 1], 0] = 1
    labels[4:7, 2] = 1  # 3 fractures
    labels[7:, 3] = 1
    z = rng.normal(size=(10, 4, 4, 4)).astype(np.float32)
    store = latent_store(tmp_path / "train.zarr", z, labels, [f"train-{i}" for i in range(10)])
    cfg = BaselinesConfig(seed=3, smote_k=2, batch_size=4)
    make_smote(store, vae, CLASSES, TAIL, 6, cfg, tmp_path / "smote", source="train.zarr")

    s = read_synthetic_set(tmp_path / "smote", CLASSES, TAIL, 6)
    frame = s.frame
    row_of = {f"train-{i}": i for i in range(10)}
    src = frame["source_id"].map(row_of).to_numpy()
    nb = frame["neighbour_id"].map(row_of).to_numpy()
    assert (s.labels(CLASSES) == np.maximum(labels[src], labels[nb])).all()  # MLSMOTE union
    assert set(src[frame["tail_class"] == "Nodule"]) <= {0, 1, 2, 3}
    assert set(nb[frame["tail_class"] == "Fracture"]) <= {4, 5, 6}
    expected = z[src] + frame["step"].to_numpy()[:, None, None, None].astype(np.float32) * (z[nb] - z[src])
    images = decode_latents(vae, torch.from_numpy(expected.astype(np.float32)))
    for i, path in enumerate(s.paths()):
        assert np.abs(np.asarray(Image.open(path)).astype(int) - images[i]).max() <= 1
    assert s.info["per_class"] == {"Nodule": {"training_samples": 4, "k": 2}, "Fracture": {"training_samples": 3, "k": 2}}


# ---------------------------------------------------------------------------- resampling


def test_balanced_repeats_use_every_item_evenly():
    picks = balanced_repeats(7, 30, seed=0)
    counts = np.bincount(picks, minlength=7)
    assert counts.sum() == 30 and counts.max() - counts.min() <= 1
    assert (balanced_repeats(7, 30, seed=0) == picks).all()


def write_manifest(tmp_path, shape: tuple[int, int], seed: int, rows: list[dict]) -> pd.DataFrame:
    """A manifest of ``rows`` (id, split, labels), each with a random image of ``shape`` written as its PNG."""
    rng = np.random.default_rng(seed)
    for i, row in enumerate(rows):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        row["path"] = str(path)
    return pd.DataFrame(rows)


def test_resample_set_copies_real_tail_images_with_their_labels(tmp_path):
    rows = [{"id": f"train-{i}", "split": "train" if i < 6 else "test", "Cardiomegaly": int(i == 0),
             "Nodule": int(i in (0, 1, 6)), "Fracture": int(i == 2), "No Finding": int(i > 2)}
            for i in range(8)]  # fmt: skip
    manifest = write_manifest(tmp_path, (40, 48), 0, rows)
    make_resample(manifest, CLASSES, TAIL, 5, 32, BaselinesConfig(), tmp_path / "resample", source="m.csv")
    s = read_synthetic_set(tmp_path / "resample", CLASSES, TAIL, 5)
    nodule = s.frame[s.frame["tail_class"] == "Nodule"]
    assert sorted(nodule["source_id"].value_counts().tolist()) == [2, 3]  # the test image train-6 is never used
    assert set(s.frame.loc[s.frame["tail_class"] == "Fracture", "source_id"]) == {"train-2"}
    for _, row in s.frame.iterrows():
        i = int(row["source_id"].split("-")[1])
        assert row[CLASSES].tolist() == manifest.loc[i, CLASSES].tolist()
        expected = load_image(manifest.loc[i, "path"], 32)  # the image encode_latents encodes: 40 x 48 -> 32 x 32
        assert (np.asarray(Image.open(s.root / row["path"])) == expected[..., None]).all()


def test_the_oracle_on_the_demo_is_fresh_real_images_labelled_with_what_they_show(tmp_path):
    from ltaug.data.demo import DemoConfig, class_names, render_oracle

    cfg = DemoConfig(seed=2, image_size=32, n_train=20, n_val=4, n_test=4)
    classes, tail = class_names(), ["Nodule", "Fracture"]
    make_oracle(classes, tail, 4, 32, 1, tmp_path / "oracle", demo=cfg)
    s = read_synthetic_set(tmp_path / "oracle", classes, tail, 4)
    assert s.method == "oracle" and s.info["draw"] == 1
    boxes = pd.read_csv(s.root / "boxes.csv")
    for _, row in s.frame.iterrows():
        present = [c for c in classes if row[c]]
        assert row["tail_class"] in present and row["No Finding"] == 0
        j = int(row["source_id"].split("-")[3])
        image, found = render_oracle(cfg, row["tail_class"], 1, j, present)
        assert (np.asarray(Image.open(s.root / row["path"]))[..., 0] == image).all()  # the drawn image itself
        assert sorted(boxes.loc[boxes["dicom_id"] == row["source_id"], "class"]) == sorted(b[0] for b in found)
    make_oracle(classes, tail, 4, 32, 2, tmp_path / "other", demo=cfg)  # another draw: other patients
    other = read_synthetic_set(tmp_path / "other", classes, tail, 4)
    first = {np.asarray(Image.open(s.root / p)).tobytes() for p in s.frame["path"]}
    assert not first & {np.asarray(Image.open(other.root / p)).tobytes() for p in other.frame["path"]}


def test_the_oracle_on_real_data_draws_from_the_held_out_images_only(tmp_path):
    rows = [{"id": f"img-{i}", "split": "holdout" if i >= 5 else "train", "Cardiomegaly": int(i == 5),
             "Nodule": int(i in (1, 5, 6)), "Fracture": int(i in (2, 7, 8)), "No Finding": int(i in (0, 3, 4))}
            for i in range(9)]  # fmt: skip
    manifest = write_manifest(tmp_path, (32, 32), 1, rows)
    make_oracle(CLASSES, TAIL, 3, 32, 0, tmp_path / "oracle", manifest=manifest, seed=4)
    s = read_synthetic_set(tmp_path / "oracle", CLASSES, TAIL, 3)
    for name, held in (("Nodule", {"img-5", "img-6"}), ("Fracture", {"img-7", "img-8"})):
        picks = s.frame.loc[s.frame["tail_class"] == name, "source_id"].value_counts()
        assert set(picks.index) == held and sorted(picks) == [1, 2]  # every held-out image in turn, no training image
    for _, row in s.frame.iterrows():  # the real labels: img-5 shows Cardiomegaly too
        assert row[CLASSES].tolist() == manifest.loc[int(row["source_id"][4:]), CLASSES].tolist()
    manifest.loc[manifest["Fracture"] == 1, "split"] = "train"
    with pytest.raises(InputError, match="tail class 'Fracture' has no held-out training image"):
        make_oracle(CLASSES, TAIL, 3, 32, 0, tmp_path / "none", manifest=manifest)
    assert not (tmp_path / "none").exists()


# ---------------------------------------------------------------------------- text-to-image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("sd") / "model", TINY, CLASSES)


def test_text_to_image_set_is_prompted_by_the_class_name_and_reproducible(model_dir, tmp_path):
    sd = load_stable_diffusion(model_dir, torch.device("cpu"))
    cfg = BaselinesConfig(seed=5, batch_size=2)
    for name in ("a", "b"):
        make_text_to_image(sd, CLASSES, TAIL, 3, 2, 3.5, cfg, tmp_path / name, method="roentgen@2")
    a = read_synthetic_set(tmp_path / "a", CLASSES, TAIL, 3)
    b = read_synthetic_set(tmp_path / "b", CLASSES, TAIL, 3)
    assert a.frame["prompt"].tolist() == ["nodule"] * 3 + ["fracture"] * 3
    assert a.labels(CLASSES).tolist() == [[0, 1, 0, 0]] * 3 + [[0, 0, 1, 0]] * 3
    assert a.info["num_steps"] == 2 and a.info["guidance_scale"] == 3.5 and a.method == "roentgen@2"
    for pa, pb in zip(a.paths(), b.paths()):
        assert (np.asarray(Image.open(pa)) == np.asarray(Image.open(pb))).all()
    assert np.asarray(Image.open(a.paths()[0])).shape == (32, 32, 3)
    assert not (np.asarray(Image.open(a.paths()[0])) == np.asarray(Image.open(a.paths()[1]))).all()


def test_text_to_image_sample_j_draws_from_its_own_generator_whatever_the_batch(model_dir, tmp_path):
    from ltaug.backbone.diffusion import sample_latents

    sd = load_stable_diffusion(model_dir, torch.device("cpu"))
    for batch in (1, 3):
        make_text_to_image(sd, CLASSES, TAIL, 3, 2, 3.5, BaselinesConfig(seed=5, batch_size=batch), tmp_path / f"b{batch}",
                           method="roentgen@2")  # fmt: skip
    one, three = (read_synthetic_set(tmp_path / f"b{b}", CLASSES, TAIL, 3) for b in (1, 3))
    pixels = [np.stack([np.asarray(Image.open(p)).astype(int) for p in s.paths()]) for s in (one, three)]
    assert np.abs(pixels[0] - pixels[1]).max() <= 1
    alone = decode_latents(sd.vae, sample_latents(sd, ["fracture"], 2, 3.5, [noise_generator(5, 1, 2)]))[0]
    assert np.abs(pixels[0][5] - alone.astype(int)).max() <= 1  # sample j=2 of tail class 1 (Fracture)
    other = decode_latents(sd.vae, sample_latents(sd, ["fracture"], 2, 3.5, [noise_generator(6, 1, 2)]))[0]
    assert np.abs(pixels[0][5] - other.astype(int)).max() > 1  # the seed decides the noise


def test_baselines_config_names_the_key():
    with pytest.raises(ConfigError, match="baselines.smote_k: 0 is less than the minimum of 1"):
        BaselinesConfig(smote_k=0)
