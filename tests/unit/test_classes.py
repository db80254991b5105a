"""Stage split_classes (ltaug.data.classes): head, medium and tail from thresholds or lists, on the real data sets' layouts; contradictory lists refused."""

from __future__ import annotations

import json

import pytest
from helpers.data import CXR_LT_26, MICCAI_19, SMALL_CLASSES, write_dataset

from ltaug.common.errors import ConfigError, InputError
from ltaug.data.classes import LongTailConfig, read_classes, write_classes
from helpers.data import run_prepare


def test_cxr_lt_2023_layout(tmp_path):
    """26 classes after dicom_id, subject_id, study_id and other metadata columns."""
    prevalence = {c: 0.5 if c == "Support Devices" else 0.2 if c == "Lung Opacity" else 0.03 for c in CXR_LT_26}
    meta = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    data = write_dataset(tmp_path, prevalence, n={"train": 100, "val": 20, "test": 20}, meta=meta, ext=".jpg")
    manifest = run_prepare(data, tmp_path)
    assert list(manifest.columns[3:]) == CXR_LT_26
    split = write_classes(LongTailConfig(tail_max_prevalence=0.03), tmp_path / "manifest.csv", tmp_path / "c.json")
    assert split.head == ["Lung Opacity", "Support Devices"]
    assert len(split.tail) == 24 and split.medium == []


def test_miccai_2023_19_class_files(tmp_path):
    prevalence = {c: 0.02 if i >= 15 else 0.4 if i < 3 else 0.1 for i, c in enumerate(MICCAI_19)}
    data = write_dataset(tmp_path, prevalence, n={"train": 100, "val": 50, "test": 50})
    manifest = run_prepare(data, tmp_path)
    assert list(manifest.columns[3:]) == MICCAI_19
    split = write_classes(LongTailConfig(), tmp_path / "manifest.csv", tmp_path / "classes.json")
    assert split.head == MICCAI_19[:3]
    assert split.tail == MICCAI_19[15:]
    assert split.medium == MICCAI_19[3:15]
    assert split.train_counts["Lung Lesion"] == 2 and split.prevalence["Lung Lesion"] == pytest.approx(0.02)
    assert split.n == {"train": 100, "val": 50, "test": 50}
    assert read_classes(tmp_path / "classes.json") == split


def test_split_by_thresholds(dataset, tmp_path):
    run_prepare(dataset, tmp_path)
    split = write_classes(LongTailConfig(tail_max_prevalence=0.05), tmp_path / "manifest.csv", tmp_path / "c.json")
    assert split.classes == list(SMALL_CLASSES)
    assert split.head == ["Cardiomegaly", "Pleural Effusion", "No Finding"]
    assert split.tail == ["Nodule", "Fracture"]
    assert split.train_counts == {"Cardiomegaly": 20, "Pleural Effusion": 10, "Nodule": 2, "Fracture": 2, "No Finding": 12}
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["tail"] == ["Nodule", "Fracture"] and saved["prevalence"]["Nodule"] == pytest.approx(0.05)


def test_explicit_lists_win_over_thresholds(dataset, tmp_path):
    run_prepare(dataset, tmp_path)
    cfg = LongTailConfig(head_classes=["Cardiomegaly"], tail_classes=["Fracture"])
    split = write_classes(cfg, tmp_path / "manifest.csv", tmp_path / "c.json")
    assert (split.head, split.tail) == (["Cardiomegaly"], ["Fracture"])
    assert split.medium == ["Pleural Effusion", "Nodule", "No Finding"]
    # an explicit tail class above the head threshold is tail, not silently head
    cfg = LongTailConfig(tail_classes=["Pleural Effusion"])
    split = write_classes(cfg, tmp_path / "manifest.csv", tmp_path / "c.json")
    assert split.tail == ["Pleural Effusion"] and "Pleural Effusion" not in split.head


def test_class_both_head_and_tail():
    with pytest.raises(ConfigError, match=r"long_tail\.head_classes and long_tail\.tail_classes both list 'Nodule'"):
        LongTailConfig(head_classes=["Nodule", "Cardiomegaly"], tail_classes=["Nodule"])


def test_tail_class_without_training_sample(tmp_path):
    prevalence = {**SMALL_CLASSES, "Hernia": 0.0}
    data = write_dataset(tmp_path, prevalence)
    run_prepare(data, tmp_path)
    with pytest.raises(InputError, match=r"tail class\(es\) 'Hernia' have no positive sample in the training split"):
        write_classes(LongTailConfig(), tmp_path / "manifest.csv", tmp_path / "classes.json")
    assert not (tmp_path / "classes.json").exists()


def test_unknown_class_in_lists(dataset, tmp_path):
    run_prepare(dataset, tmp_path)
    with pytest.raises(ConfigError, match=r"long_tail\.tail_classes: 'Hernia' not among the classes"):
        write_classes(LongTailConfig(tail_classes=["Hernia"]), tmp_path / "manifest.csv", tmp_path / "c.json")
