"""prepare_data and split_classes: values of the manifest and class split, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.data import SMALL_CLASSES, write_dataset

from ltaug.common.errors import InputError
from helpers.data import run_prepare


def expected_column(i: np.ndarray, k: int, p: float, n: int) -> np.ndarray:
    return ((i + 3 * k) % n < round(p * n)).astype(np.uint8)


# ---------------------------------------------------------------------------- happy paths


def test_manifest_values(dataset, tmp_path):
    manifest = run_prepare(dataset, tmp_path)
    assert list(manifest.columns) == ["id", "path", "split", *SMALL_CLASSES]
    assert manifest["split"].tolist() == ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        part = manifest[manifest["split"] == split]
        assert part["id"].tolist() == [f"{split}-{i:04d}" for i in range(n)]
        for k, (c, p) in enumerate(SMALL_CLASSES.items()):
            np.testing.assert_array_equal(part[c].to_numpy(), expected_column(np.arange(n), k, p, n))
    first = manifest.iloc[0]
    assert first["path"] == str(Path(dataset["image_root"]) / "files/p10/train/train-0000.png")
    assert all(Path(p).is_file() for p in manifest["path"])


def test_columns_are_read_by_name_not_position(dataset, tmp_path):
    reference = run_prepare(dataset, tmp_path / "a")
    for split, path in dataset["labels"].items():
        df = pd.read_csv(path)
        df[df.columns[::-1]].to_csv(path, index=False)  # every column moved
    shuffled = run_prepare(dataset, tmp_path / "b", classes=list(SMALL_CLASSES))
    pd.testing.assert_frame_equal(reference, shuffled)


def test_configured_classes_select_and_order(dataset, tmp_path):
    manifest = run_prepare(dataset, tmp_path, classes=["Nodule", "Cardiomegaly"])
    assert list(manifest.columns) == ["id", "path", "split", "Nodule", "Cardiomegaly"]


@pytest.mark.parametrize("ext,mode,size", [(".jpg", "L", (33, 41)), (".jpg", "RGB", (50, 30)), (".png", "RGB", (8, 8))])
def test_jpg_png_gray_rgb_any_size(tmp_path, ext, mode, size):
    data = write_dataset(tmp_path, ext=ext, mode=mode, size=size)
    manifest = run_prepare(data, tmp_path, check_images="full")
    assert len(manifest) == 60 and manifest["path"].str.endswith(ext).all()


def test_cxr_lt_metadata_column_not_listed_is_reported(tmp_path):
    meta = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    data = write_dataset(tmp_path, meta=meta)
    data["metadata_columns"] = ["dicom_id", "subject_id", "study_id"]
    with pytest.raises(InputError, match=r"column 'ViewPosition': 40 row\(s\): line 2 \('AP'\).* \(no row is 0 or 1: if this is not a class, add it to data\.metadata_columns\)"):
        run_prepare(data, tmp_path)


# ---------------------------------------------------------------------------- class split


# ---------------------------------------------------------------------------- bad input: each names what and how


def assert_fails(data: dict, out: Path, error, pattern: str, **overrides):
    with pytest.raises(error, match=pattern):
        run_prepare(data, out, **overrides)
    assert not (out / "manifest.csv").exists()
    assert not list(out.glob(".manifest.csv.tmp-*"))


def test_labels_csv_missing(dataset, tmp_path):
    Path(dataset["labels"]["val"]).unlink()
    assert_fails(dataset, tmp_path, InputError, r"val\.csv: labels CSV of the val split \(data\.labels\.val\) does not exist")


def test_path_column_missing(dataset, tmp_path):
    assert_fails(dataset, tmp_path, InputError, r"train\.csv: no column 'filepath' \(data\.path_column\).*Set data\.path_column", path_column="filepath")


def test_configured_class_absent(dataset, tmp_path):
    assert_fails(
        dataset, tmp_path, InputError, r"train\.csv: class\(es\) 'Hernia' from data\.classes are not columns",
        classes=["Cardiomegaly", "Hernia"],
    )


def test_class_missing_from_one_split(dataset, tmp_path):
    path = dataset["labels"]["test"]
    pd.read_csv(path).drop(columns="Nodule").to_csv(path, index=False)
    assert_fails(dataset, tmp_path, InputError, r"test\.csv: lacks class column\(s\) 'Nodule'")


@pytest.mark.parametrize("value,shown", [("", "blank"), ("-1", "'-1'"), ("2", "'2'"), ("yes", "'yes'")])
def test_label_value_not_0_or_1(dataset, tmp_path, value, shown):
    path = dataset["labels"]["train"]
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[[3, 17], "Fracture"] = value
    df.to_csv(path, index=False)
    assert_fails(
        dataset, tmp_path, InputError,
        rf"(?s)train\.csv: label values must be 0 or 1.*column 'Fracture': 2 row\(s\): line 5 \({shown}\), line 19 \({shown}\)",
    )


def test_many_bad_labels_are_counted(dataset, tmp_path):
    path = dataset["labels"]["train"]
    df = pd.read_csv(path)
    df["Nodule"] = -1
    df.to_csv(path, index=False)
    assert_fails(dataset, tmp_path, InputError, r"column 'Nodule': 40 row\(s\): line 2 .* and 35 more")


def test_duplicate_id_within_and_across_splits(dataset, tmp_path):
    path = dataset["labels"]["test"]
    df = pd.read_csv(path)
    df.loc[4, "dicom_id"] = "train-0007"
    df.to_csv(path, index=False)
    assert_fails(
        dataset, tmp_path, InputError,
        r"1 id\(s\) in column 'dicom_id' \(data\.id_column\) appear more than once: 'train-0007' at .*train\.csv line 9, .*test\.csv line 6",
    )


def test_duplicate_column_in_header(dataset, tmp_path):
    path = Path(dataset["labels"]["train"])
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("Fracture", "Nodule")
    path.write_text("\n".join(lines) + "\n")
    assert_fails(dataset, tmp_path, InputError, r"train\.csv: column\(s\) 'Nodule' appear more than once")


def test_missing_images_counted_and_listed(dataset, tmp_path):
    root = Path(dataset["image_root"])
    for i in range(7):
        (root / f"files/p10/val/val-{i:04d}.png").unlink()
    assert_fails(
        dataset, tmp_path, InputError,
        r"(?s)7 of 60 images listed in the labels files do not exist under data\.image_root=.*the first 5:\n"
        r"  .*val-0000\.png \(.*val\.csv line 2\)",
    )


@pytest.mark.parametrize("level", ["header", "full"])
def test_truncated_png(dataset, tmp_path, level):
    image = Path(dataset["image_root"]) / "files/p10/test/test-0003.png"
    image.write_bytes(image.read_bytes()[:-30])
    assert_fails(dataset, tmp_path, InputError, r"test-0003\.png \(.*test\.csv line 5\): cannot read the image", check_images=level)


def test_truncated_jpg_caught_by_full_decode(tmp_path):
    data = write_dataset(tmp_path, ext=".jpg", size=(64, 64))
    image = Path(data["image_root"]) / "files/p10/train/train-0011.jpg"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    assert_fails(data, tmp_path, InputError, r"train-0011\.jpg \(.*train\.csv line 13\): cannot read the image", check_images="full")


def test_not_an_image(dataset, tmp_path):
    image = Path(dataset["image_root"]) / "files/p10/train/train-0002.png"
    image.write_text("this is not a PNG")
    assert_fails(dataset, tmp_path, InputError, r"train-0002\.png .*cannot read the image", check_images="header")
