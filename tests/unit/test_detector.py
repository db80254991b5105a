"""Label fidelity, and the demo's finding detector checked on real demo images against their ground-truth boxes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ltaug.data.demo import DemoConfig, make_demo, render_image
from ltaug.evaluation.detector import Detector, fit_detector, label_fidelity, response, youden_threshold

TAIL = ["Nodule", "Fracture", "Calcification of the Aorta", "Pneumoperitoneum"]


def test_label_fidelity_is_the_share_at_or_above_the_threshold():
    assert label_fidelity(np.array([0.1, 0.3, 0.3, 0.9]), 0.3) == 0.75
    assert label_fidelity(np.array([0.1]), 0.5) == 0.0
    with pytest.raises(ValueError, match="no samples"):
        label_fidelity(np.array([]), 0.5)


def test_youden_threshold_separates_hand_made_scores():
    threshold, j = youden_threshold(np.array([4.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0, 5.0]))
    assert threshold == 4.0 and j == pytest.approx(1 + 3 / 4 - 1)  # at 6: 2/3 + 1 - 1 is less


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Real demo images (128 px) with tail findings common enough to fit and test the detector."""
    cfg = DemoConfig(seed=1, n_train=40, n_val=240, n_test=160, prevalence={
        "Cardiomegaly": 0.3, "Pleural Effusion": 0.2, "Lung Opacity": 0.2, "Support Devices": 0.18,
        "Nodule": 0.08, "Fracture": 0.08, "Calcification of the Aorta": 0.08, "Pneumoperitoneum": 0.08})  # fmt: skip
    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo(root, cfg, workers=2)
    frames = []
    for split in ("train", "val", "test"):
        f = pd.read_csv(root / f"{split}.csv")
        frames.append(pd.DataFrame({"id": f["dicom_id"], "path": [str(root / "images" / p) for p in f["path"]],
                                    "split": split}).join(f.iloc[:, 4:]))  # fmt: skip
    return cfg, pd.concat(frames, ignore_index=True), pd.read_csv(root / "boxes.csv")


def test_detector_finds_the_tail_findings_of_real_demo_images_inside_their_boxes(demo, tmp_path):
    cfg, manifest, boxes = demo
    detector = fit_detector(manifest, boxes, TAIL, cfg.image_size, seed=0)
    assert set(detector.classes) == set(TAIL)
    for name in TAIL:
        test = detector.classes[name]["test"]
        assert test["positives"] == round(0.08 * 160) and test["negatives"] == 160 - test["positives"]
        assert detector.classes[name]["fitted_on"] == "val" and detector.classes[name]["val"]["positives"] == round(0.08 * 240)
        # on real test images it was not fitted on
        assert test["sensitivity"] >= 0.6 and test["specificity"] >= 0.7, (name, test)
        assert test["sensitivity"] + test["specificity"] - 1 >= 0.5, (name, test)
        assert test["localisation"] >= 0.7, (name, test)  # the strongest response lies in the finding's box
    detector.save(tmp_path / "detector.json")
    loaded = Detector.load(tmp_path / "detector.json")
    assert loaded.classes == detector.classes
    # the same anatomy drawn with and without a nodule: the detector tells them apart
    with_nodule, _ = render_image(cfg, "test", 3, ["Nodule"])
    without, _ = render_image(cfg, "test", 3, [])
    assert loaded.rate("Nodule", [with_nodule]) == 1.0 and loaded.rate("Nodule", [without]) == 0.0
    assert loaded.rate("Cardiomegaly", [without]) is None  # no detector for that finding


def test_isolated_blob_fires_on_a_spot_not_on_the_edge_of_a_large_bright_structure():
    img = np.full((64, 64), 40.0, dtype=np.float32)
    img[:, 40:] = 160.0  # a large bright structure (a mediastinum) from column 40 on
    yy, xx = np.mgrid[0:64, 0:64]
    img[np.hypot(xx - 16, yy - 32) <= 8] += 70.0  # a spot of radius 8 in the dark "lung"
    r = response(img, "isolated_blob", (6.0, 12.0, 16.0))
    peak = np.unravel_index(int(np.argmax(r)), r.shape)
    assert abs(peak[0] - 32) <= 2 and abs(peak[1] - 16) <= 2  # a plateau: the disk fits inside the spot
    assert r[32, 16] == pytest.approx(70.0, abs=1.0)  # disk mean 110 minus the darkest ring sector's 40
    assert r[:, 36:48].max() < 5.0  # along the edge some ring sector is as bright as the disk: no response


def test_the_detector_depends_on_the_validation_images_only(demo):
    """Synthetic samples are made from training images: the judge's region and threshold must not see them."""
    cfg, manifest, boxes = demo
    detector = fit_detector(manifest, boxes, TAIL, cfg.image_size, seed=0)
    train = manifest["split"] == "train"
    others = manifest[manifest["split"] == "test"]["path"].to_numpy()
    changed = manifest.copy()
    changed.loc[train, "path"] = others[: int(train.sum())]  # other images, and other labels, in the training split
    changed.loc[train, TAIL] = 1 - changed.loc[train, TAIL].to_numpy()
    moved = boxes.copy()
    moved.loc[moved["split"] == "train", "x0"] = 0  # and other training boxes
    moved.loc[moved["split"] == "train", "x1"] = 5
    again = fit_detector(changed, moved, TAIL, cfg.image_size, seed=0)
    for name in TAIL:
        assert again.classes[name]["threshold"] == detector.classes[name]["threshold"]
        assert again.classes[name]["boxes"] == detector.classes[name]["boxes"]
    # while a change to the validation images moves it
    val = manifest["split"] == "val"
    shifted = manifest.copy()
    shifted.loc[val, "path"] = np.resize(others, int(val.sum()))
    assert any(fit_detector(shifted, boxes, TAIL, cfg.image_size, seed=0).classes[n]["threshold"]
               != detector.classes[n]["threshold"] for n in TAIL)


def test_rate_intervals_hold_the_rate_and_average_over_classes():
    from ltaug.evaluation.detector import rate_intervals

    hits = {"a": np.array([True] * 30 + [False] * 10), "b": np.array([False] * 20), "c": np.array([], dtype=bool)}
    out = rate_intervals(hits, resamples=500, seed=0)
    assert out["a"]["rate"] == 0.75 and out["a"]["lo"] < 0.75 < out["a"]["hi"] and out["a"]["n"] == 40
    assert (out["b"]["rate"], out["b"]["lo"], out["b"]["hi"]) == (0.0, 0.0, 0.0)  # no hit in any resample
    assert np.isnan(out["c"]["rate"]) and out["mean"]["rate"] == pytest.approx(0.375)  # c is left out of the mean
    assert out["mean"]["lo"] < 0.375 < out["mean"]["hi"] and out["mean"]["n"] == 60
    again = rate_intervals(hits, resamples=500, seed=0)
    assert again["a"] == out["a"] and again["mean"] == out["mean"]  # seeded
