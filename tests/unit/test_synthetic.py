"""The synthetic-set layout: write -> read gives back the same samples; every broken set is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ltaug.common.errors import InputError
from ltaug.data.synthetic import SyntheticSetWriter, read_synthetic_set, sample_ids, write_synthetic_set

CLASSES = ["Cardiomegaly", "Nodule", "Fracture", "No Finding"]
TAIL = ["Nodule", "Fracture"]


def make_set(directory, n_per_class=3, method="ours@1"):
    """A valid set: n_per_class samples per tail class, images whose pixels encode their row."""
    n = 2 * n_per_class
    images = np.stack([np.full((16, 16, 3), 10 * i, dtype=np.uint8) for i in range(n)])
    provenance = pd.DataFrame({"tail_class": ["Nodule"] * n_per_class + ["Fracture"] * n_per_class,
                               "tail_id": [f"train-{i}" for i in range(n)], "head_id": "train-99"})  # fmt: skip
    labels = np.zeros((n, len(CLASSES)), dtype=np.uint8)
    labels[:n_per_class, 1] = 1
    labels[n_per_class:, 2] = 1
    labels[0, 0] = 1  # a multi-label sample
    write_synthetic_set(directory, method, images, provenance, labels, CLASSES, TAIL, n_per_class, info={"steps": 1})
    return images, provenance, labels


def test_write_then_read_gives_the_same_samples(tmp_path):
    images, provenance, labels = make_set(tmp_path / "ours@1")
    s = read_synthetic_set(tmp_path / "ours@1", CLASSES, TAIL, 3)
    frame = s.frame
    assert list(frame.columns) == ["dicom_id", "tail_class", "tail_id", "head_id", "path", *CLASSES]
    assert frame["dicom_id"].tolist()[:2] == ["ours@1-nodule-00000", "ours@1-nodule-00001"]
    assert frame["dicom_id"].tolist()[3] == "ours@1-fracture-00000"
    assert frame["tail_id"].tolist() == provenance["tail_id"].tolist()
    assert (s.labels(CLASSES) == labels).all()
    for i, path in enumerate(s.paths()):
        assert (np.asarray(Image.open(path)) == images[i]).all()
    info = json.loads((tmp_path / "ours@1/set.json").read_text())
    assert info["method"] == "ours@1" and info["n_per_class"] == 3 and info["tail"] == TAIL
    assert info["provenance_columns"] == ["tail_class", "tail_id", "head_id"] and info["steps"] == 1
    assert info["image_shape"] == [16, 16, 3] and s.method == "ours@1"


def test_streaming_writer_continues_ids_across_batches(tmp_path):
    labels = np.zeros((2, len(CLASSES)), dtype=np.uint8)
    labels[:, 1] = 1
    with SyntheticSetWriter(tmp_path / "s", "smote", CLASSES, ["Nodule"], 4) as w:
        for _ in range(2):
            w.add(np.zeros((2, 8, 8, 3), np.uint8), pd.DataFrame({"tail_class": ["Nodule"] * 2}), labels)
    assert read_synthetic_set(tmp_path / "s", CLASSES).frame["dicom_id"].tolist() == [
        f"smote-nodule-{i:05d}" for i in range(4)
    ]
    assert sample_ids("roentgen@75", ["Calcification of the Aorta"]) == ["roentgen@75-calcification_of_the_aorta-00000"]


def test_writer_leaves_nothing_when_counts_are_wrong(tmp_path):
    labels = np.zeros((1, len(CLASSES)), dtype=np.uint8)
    labels[:, 1] = 1
    with pytest.raises(ValueError, match=r"expected 2 samples per tail class, got \{'Nodule': 1, 'Fracture': 0\}"):
        with SyntheticSetWriter(tmp_path / "s", "smote", CLASSES, TAIL, 2) as w:
            w.add(np.zeros((1, 8, 8, 3), np.uint8), pd.DataFrame({"tail_class": ["Nodule"]}), labels)
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_a_sample_not_labelled_for_its_tail_class(tmp_path):
    with pytest.raises(ValueError, match="labelled positive for the tail class"):
        write_synthetic_set(tmp_path / "s", "smote", np.zeros((1, 8, 8), np.uint8), pd.DataFrame({"tail_class": ["Nodule"]}),
                            np.zeros((1, 4), np.uint8), CLASSES, ["Nodule"], 1)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_empty_set_is_an_error_not_a_row_of_zeros(tmp_path):
    make_set(tmp_path / "s")
    manifest = tmp_path / "s/manifest.csv"
    pd.read_csv(manifest).iloc[:0].to_csv(manifest, index=False)
    with pytest.raises(InputError, match=r"manifest.csv: the synthetic set of method 'ours@1' has no samples"):
        read_synthetic_set(tmp_path / "s", CLASSES)


@pytest.mark.parametrize(
    "damage,pattern",
    [
        (lambda d: (d / "set.json").unlink(), r"set.json: missing"),
        (lambda d: pd.read_csv(d / "manifest.csv").iloc[1:].to_csv(d / "manifest.csv", index=False),
         r"expected 3 samples per tail class \(set.json n_per_class\), found Nodule: 2"),
        (lambda d: pd.read_csv(d / "manifest.csv").drop(columns="Fracture").to_csv(d / "manifest.csv", index=False),
         r"no column\(s\) 'Fracture'"),
        (lambda d: (d / "images/ours@1-fracture-00002.png").unlink(), r"1 listed image\(s\) do not exist"),
        (lambda d: pd.read_csv(d / "manifest.csv").assign(Nodule=0).to_csv(d / "manifest.csv", index=False),
         r"line\(s\) 2, 3, 4: sample not labelled positive for its tail_class"),
        (lambda d: pd.read_csv(d / "manifest.csv").assign(Cardiomegaly=2).to_csv(d / "manifest.csv", index=False),
         r"labels must be 0 or 1"),
    ],
)  # fmt: skip
def test_broken_sets_are_refused_by_name(tmp_path, damage, pattern):
    make_set(tmp_path / "ours@1")
    damage(tmp_path / "ours@1")
    with pytest.raises(InputError, match=pattern):
        read_synthetic_set(tmp_path / "ours@1", CLASSES)


def test_set_of_other_classes_or_size_is_refused(tmp_path):
    make_set(tmp_path / "s")
    with pytest.raises(InputError, match=r"made for classes .* but the workflow's classes are"):
        read_synthetic_set(tmp_path / "s", CLASSES[:3])
    with pytest.raises(InputError, match=r"3 samples per tail class but fusion.n_per_class is 5"):
        read_synthetic_set(tmp_path / "s", CLASSES, TAIL, n_per_class=5)
    with pytest.raises(InputError, match=r"no synthetic set here"):
        read_synthetic_set(tmp_path / "missing", CLASSES)


def test_the_training_export_is_the_real_rows_then_the_synthetic_ones(tmp_path):
    from ltaug.data.synthetic import export_training_rows

    images, provenance, labels = make_set(tmp_path / "ours@1")
    synthetic = read_synthetic_set(tmp_path / "ours@1", CLASSES, TAIL, 3)
    order = ["No Finding", "Fracture", "Cardiomegaly", "Nodule"]  # classes.json's order, not the set's columns'
    manifest = pd.DataFrame({"id": ["train-0", "train-1", "val-0"], "path": ["images/a.png", "images/b.png", "images/c.png"],
                             "split": ["train", "train", "val"], "Cardiomegaly": [1, 0, 0], "Nodule": [0, 1, 0],
                             "Fracture": [0, 0, 1], "No Finding": [0, 0, 0]})  # fmt: skip
    rows = export_training_rows(tmp_path / "export.csv", manifest, order, synthetic)
    assert list(rows.columns) == ["id", "path", "synthetic", *order, "tail_class", "tail_id", "head_id"]
    assert rows["id"].tolist() == ["train-0", "train-1", *synthetic.frame["dicom_id"]]  # no val row
    assert rows["synthetic"].tolist() == [0, 0] + [1] * 6
    assert rows.loc[0, "path"] == str(Path("images/a.png").resolve())  # relative to the run's directory, made absolute
    assert all(Path(p).is_absolute() for p in rows["path"]) and rows.loc[2, "path"] == str(Path(synthetic.paths()[0]).resolve())
    assert rows[order].to_numpy().tolist()[:2] == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert np.array_equal(rows[order].to_numpy()[2:], labels[:, [3, 2, 0, 1]])
    assert rows["tail_id"].iloc[2:].tolist() == provenance["tail_id"].tolist() and rows["tail_id"].iloc[:2].isna().all()
    again = pd.read_csv(tmp_path / "export.csv")
    assert again["id"].tolist() == rows["id"].tolist() and list(again.columns) == list(rows.columns)
    real_only = export_training_rows(tmp_path / "baseline.csv", manifest, order, None)
    assert real_only["synthetic"].tolist() == [0, 0] and list(real_only.columns) == ["id", "path", "synthetic", *order]
