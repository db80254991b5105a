"""Tests of ltaug.data.demo: exact label counts, finding locality and regions, the radiograph look,
make_demo's files (byte-identical for any number of workers, atomic on failure), config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ltaug.common.errors import ConfigError, InputError
from ltaug.data import demo
from ltaug.data.demo import DEFAULT_PREVALENCE, FINDINGS, NO_FINDING, SPLITS, DemoConfig, class_names, make_demo

TINY = DemoConfig(seed=3, image_size=64, n_train=30, n_val=8, n_test=8)


# ---------------------------------------------------------------- labels


def test_class_names_are_the_findings_then_no_finding():
    assert class_names() == [*FINDINGS, NO_FINDING]
    assert list(DEFAULT_PREVALENCE) == list(FINDINGS)
    assert len(class_names()) == 11


@pytest.mark.parametrize("cfg", [DemoConfig(), TINY, DemoConfig(seed=7, n_train=57, n_val=3, n_test=1)])
def test_each_class_has_exactly_round_p_n_positives(cfg):
    for split in SPLITS:
        labels = demo.draw_labels(cfg, split)
        n = getattr(cfg, f"n_{split}")
        assert labels.shape == (n, 11) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1}
        for k, name in enumerate(FINDINGS):
            assert labels[:, k].sum() == max(1, round(cfg.prevalence[name] * n)), (split, name)
        # No Finding is 1 exactly where no other finding is
        np.testing.assert_array_equal(labels[:, -1], labels[:, :-1].sum(axis=1) == 0)


def test_default_training_split_is_long_tailed():
    prevalence = demo.draw_labels(DemoConfig(), "train")[:, :-1].mean(axis=0)
    np.testing.assert_allclose(prevalence, list(DEFAULT_PREVALENCE.values()))
    assert (prevalence >= 0.15).sum() >= 4
    assert (prevalence <= 0.02).sum() >= 3
    assert demo.draw_labels(DemoConfig(), "train")[:, :-1].sum(axis=1).max() >= 2  # multi-label


def test_labels_depend_on_seed_only():
    a = demo.draw_labels(DemoConfig(seed=1), "train")
    np.testing.assert_array_equal(a, demo.draw_labels(DemoConfig(seed=1), "train"))
    assert not np.array_equal(a, demo.draw_labels(DemoConfig(seed=2), "train"))
    assert not np.array_equal(a[:400], demo.draw_labels(DemoConfig(seed=1), "val"))


def test_a_finding_left_out_is_never_drawn_and_gets_no_column(tmp_path):
    cfg = DemoConfig(image_size=32, n_train=50, n_val=4, n_test=4, prevalence={"Nodule": 0.1, "Fracture": 0.04})
    labels = demo.draw_labels(cfg, "train")
    assert labels[:, list(FINDINGS).index("Nodule")].sum() == 5
    assert labels[:, :-1].sum() == 5 + 2 and labels[:, -1].sum() == 50 - (labels[:, :-1].max(axis=1)).sum()
    make_demo(tmp_path / "demo", cfg)
    table = pd.read_csv(tmp_path / "demo" / "train.csv")
    assert list(table.columns[4:]) == ["Nodule", "Fracture", NO_FINDING]
    assert table["Nodule"].sum() == 5 and table["Fracture"].sum() == 2


# ---------------------------------------------------------------- images


def _box(boxes, name):
    (box,) = [b[1:] for b in boxes if b[0] == name]
    return box


def _region_ok(name: str, box, size: int) -> bool:
    """Where each finding must be, in fractions of the image (image left = patient right)."""
    x0, y0, x1, y1 = (v / size for v in box)
    xc, yc, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    one_lung = abs(xc - 0.5) > 0.12  # centred over a lung, not the mediastinum
    small = 8 / size  # what the blur margins add to a small pattern's box
    return {
        "Cardiomegaly": 0.35 < xc < 0.65 and 0.45 < yc < 0.8 and w > 0.35,  # wide, low, central
        "Pleural Effusion": one_lung and yc > 0.5,  # a lung base
        "Lung Opacity": one_lung and yc < 0.5,  # mid/upper zone
        "Support Devices": y0 == 0 and h > 0.3,  # from the neck down
        "Atelectasis": one_lung and 0.4 < yc < 0.7 and w > 1.5 * h - small,  # lower zone, plate-like
        "Pneumothorax": one_lung and y0 < 0.25,  # reaches the apex
        "Nodule": one_lung and 0.12 < w < 0.18 + small and 0.12 < h < 0.18 + small,  # 16-22 px at 128: 2+ cells
        "Fracture": abs(xc - 0.5) > 0.15 and w < 0.16 + small and h < 0.16 + small,  # lateral rib
        "Calcification of the Aorta": y1 < 0.5 and 0.5 < xc < 0.7 and w < 0.16 + small,  # aortic knob
        "Pneumoperitoneum": xc < 0.45 and yc > 0.55,  # under the right hemidiaphragm
    }[name]


@pytest.mark.parametrize("name", list(FINDINGS))
@pytest.mark.parametrize("size", [128, 64])
def test_each_finding_is_local_in_its_region_and_leaves_the_rest_alone(name, size):
    cfg = DemoConfig(seed=5, image_size=size)
    for index in range(4):
        for others in ([], [f for f in FINDINGS if f != name]):  # alone, and among all the others
            with_it, boxes = demo.render_image(cfg, "train", index, [*others, name])
            without, _ = demo.render_image(cfg, "train", index, others)
            diff = np.abs(with_it.astype(np.int64) - without)
            x0, y0, x1, y1 = _box(boxes, name)
            inside = diff[y0:y1, x0:x1].sum()
            assert diff.sum() >= 300 * (size / 128) ** 2 and diff.max() >= 20, (index, diff.sum(), diff.max())
            assert inside >= 0.9 * diff.sum()
            assert inside == diff.sum()  # stronger: nothing outside the box changed at all
            assert _region_ok(name, (x0, y0, x1, y1), size), (index, (x0, y0, x1, y1))
            assert len(boxes) == len(others) + 1


def test_boxes_are_tight():
    cfg = DemoConfig(seed=5)
    for name in FINDINGS:
        with_it, boxes = demo.render_image(cfg, "val", 1, [name])
        ys, xs = np.nonzero(with_it != demo.render_image(cfg, "val", 1, [])[0])
        x0, y0, x1, y1 = _box(boxes, name)
        assert max(xs.min() - x0, ys.min() - y0, x1 - 1 - xs.max(), y1 - 1 - ys.max()) <= 5, name


def test_images_look_like_a_radiograph():
    cfg = DemoConfig(seed=11)
    for index in range(6):
        img, boxes = demo.render_image(cfg, "test", index, [])
        assert img.shape == (128, 128) and img.dtype == np.uint8 and boxes == []

        def mean(x, y, r=6):
            return img[y - r : y + r, x - r : x + r].mean()

        outside = np.mean([mean(4, 4, 3), mean(123, 4, 3)])  # above the shoulders
        lungs = np.mean([mean(38, 52), mean(90, 52)])
        mediastinum, abdomen = mean(64, 76), mean(40, 118)
        assert outside < 35
        assert lungs + 40 < mediastinum and lungs + 40 < abdomen
        assert outside + 20 < lungs
        assert img.std() > 30


def test_the_oracle_s_images_are_fresh_draws_in_no_split():
    """The oracle's images come from streams no split uses: none equals an image of train, val or test, none equals
    another draw's, and each shows its tail class with the others at their prevalences."""
    splits = {demo.render_image(TINY, split, i, [])[0].tobytes() for split in SPLITS
              for i in range(getattr(TINY, f"n_{split}"))}  # fmt: skip
    seen = set()
    for draw in (0, 1):
        for name in ("Nodule", "Fracture"):
            for j, findings in enumerate(demo.oracle_findings(TINY, name, 6, draw)):
                assert name in findings
                image, boxes = demo.render_oracle(TINY, name, draw, j, findings)
                assert [b[0] for b in boxes] == [c for c in FINDINGS if c in findings]
                bare = demo.render_oracle(TINY, name, draw, j, [])[0].tobytes()
                assert bare not in splits and bare not in seen  # a new patient every time
                seen.add(bare)
    again, _ = demo.render_oracle(TINY, "Nodule", 0, 2, ["Nodule"])
    np.testing.assert_array_equal(again, demo.render_oracle(TINY, "Nodule", 0, 2, ["Nodule"])[0])
    many = demo.oracle_findings(DemoConfig(), "Nodule", 3000, 0)
    for name in ("Cardiomegaly", "Pneumothorax", "Fracture"):
        share = np.mean([name in f for f in many])
        p = DEFAULT_PREVALENCE[name]
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 3000), name
    assert demo.oracle_findings(DemoConfig(), "Nodule", 50, 1) != many[:50]


def test_rendering_is_deterministic_and_depends_on_seed_split_index():
    a, boxes = demo.render_image(TINY, "train", 2, ["Nodule", "Fracture"])
    b, boxes_b = demo.render_image(TINY, "train", 2, ["Fracture", "Nodule"])
    np.testing.assert_array_equal(a, b)
    assert boxes == boxes_b and [c for c, *_ in boxes] == ["Nodule", "Fracture"]
    for other in [demo.render_image(TINY, "train", 3, [])[0], demo.render_image(TINY, "val", 2, [])[0],
                  demo.render_image(DemoConfig(seed=4, image_size=64), "train", 2, [])[0]]:
        assert np.abs(other.astype(int) - demo.render_image(TINY, "train", 2, [])[0]).mean() > 1
    with pytest.raises(ValueError, match="Nodules"):
        demo.render_image(TINY, "train", 0, ["Nodules"])


# ---------------------------------------------------------------- make_demo


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    demo.make_demo(out, TINY, workers=1)
    return out


def test_make_demo_is_byte_identical_for_any_number_of_workers(tiny_demo, tmp_path):
    demo.make_demo(tmp_path / "two", TINY, workers=2)
    one, two = _files(tiny_demo), _files(tmp_path / "two")
    assert len(one) == 46 + 5 and one.keys() == two.keys()
    assert all(one[k] == two[k] for k in one)
    assert [p.name for p in tmp_path.iterdir()] == ["two"]  # no temporary directory left


def test_make_demo_writes_the_cxr_lt_layout(tiny_demo):
    names = class_names()
    subjects = {}
    for split in SPLITS:
        table = pd.read_csv(tiny_demo / f"{split}.csv")
        assert list(table.columns) == ["dicom_id", "subject_id", "study_id", "path", *names]
        n = getattr(TINY, f"n_{split}")
        assert list(table["dicom_id"]) == [f"demo-{split}-{i:06d}" for i in range(n)]
        np.testing.assert_array_equal(table[names].to_numpy(), demo.draw_labels(TINY, split))
        assert table[names].isin([0, 1]).all().all()
        assert table["study_id"].is_unique and (table["subject_id"] >= 10_000_000).all()
        subjects[split] = set(table["subject_id"])
        for path in table["path"]:
            assert path.startswith(f"{split}/")
            with Image.open(tiny_demo / "images" / path) as im:
                assert im.mode == "L" and im.size == (64, 64)
    assert not subjects["train"] & subjects["val"] and not subjects["val"] & subjects["test"]


def test_boxes_csv_matches_the_labels_and_the_images(tiny_demo):
    boxes = pd.read_csv(tiny_demo / "boxes.csv")
    assert list(boxes.columns) == ["dicom_id", "split", "class", "x0", "y0", "x1", "y1"]
    assert ((0 <= boxes.x0) & (boxes.x0 < boxes.x1) & (boxes.x1 <= 64)).all()
    assert ((0 <= boxes.y0) & (boxes.y0 < boxes.y1) & (boxes.y1 <= 64)).all()
    for split in SPLITS:
        table = pd.read_csv(tiny_demo / f"{split}.csv").set_index("dicom_id")
        drawn = boxes[boxes.split == split].groupby("dicom_id")["class"].apply(set)
        for dicom_id, row in table.iterrows():
            assert drawn.get(dicom_id, set()) == {c for c in FINDINGS if row[c] == 1}, dicom_id
    first = boxes.iloc[0]
    img = np.asarray(Image.open(tiny_demo / "images" / "train" / f"{first.dicom_id}.png"))
    index = int(first.dicom_id.rsplit("-", 1)[1])
    findings = list(boxes[boxes.dicom_id == first.dicom_id]["class"])
    np.testing.assert_array_equal(img, demo.render_image(TINY, "train", index, findings)[0])


def test_demo_json_records_config_and_prevalence(tiny_demo):
    info = json.loads((tiny_demo / "demo.json").read_text())
    assert info["classes"] == class_names() and info["config"]["image_size"] == 64
    assert DemoConfig(**info["config"]) == TINY
    train = info["splits"]["train"]
    assert train["n"] == 30 and train["positives"]["Cardiomegaly"] == 9
    assert train["prevalence"]["Cardiomegaly"] == pytest.approx(0.3)


def test_failure_midway_leaves_no_output_and_keeps_an_old_one(tmp_path, monkeypatch):
    real, calls = demo.render_image, []

    def flaky(*args):
        calls.append(args)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(demo, "render_image", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.make_demo(tmp_path / "new", TINY)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "train.csv").write_text("complete\n")
    calls.clear()
    with pytest.raises(RuntimeError):
        demo.make_demo(tmp_path / "old", TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    assert (tmp_path / "old" / "train.csv").read_text() == "complete\n"


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"image_size": 100}, "demo.image_size"),
        ({"image_size": 24}, "demo.image_size"),
        ({"n_val": 0}, "demo.n_val"),
        ({"seed": -1}, "demo.seed"),
        ({"prevalence": {"Nodule": 1.5}}, "demo.prevalence.Nodule"),
        ({"prevalence": {"Nodule": 0.0}}, "demo.prevalence.Nodule"),
        ({"prevalence": {"Nodules": 0.1}}, "'Nodules'"),
        ({"prevalence": {NO_FINDING: 0.1}}, "demo.prevalence"),
    ],
)
def test_bad_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DemoConfig(**kwargs)


def test_config_does_not_alias_the_callers_prevalence():
    prevalence = {"Nodule": 0.1}
    cfg = DemoConfig(prevalence=prevalence)
    prevalence["Nodule"] = 0.9
    assert cfg.prevalence == {"Nodule": 0.1}


def test_make_demo_refuses_a_directory_with_other_files(tmp_path):
    outdir = tmp_path / "mine"
    outdir.mkdir()
    (outdir / "patients.csv").write_text("precious")
    with pytest.raises(InputError, match=r"mine \(demo\.outdir\) holds files the demo did not write \(patients\.csv\)"):
        make_demo(outdir, DemoConfig(image_size=32, n_train=4, n_val=2, n_test=2))
    assert (outdir / "patients.csv").read_text() == "precious"
