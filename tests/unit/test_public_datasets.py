"""NIH ChestX-ray14, CheXpert and PadChest read as downloaded: small files made here in exactly their layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ltaug.common.errors import ConfigError, InputError
from ltaug.common.images import open_image
from ltaug.data.classes import LongTailConfig, write_classes
from ltaug.data.manifest import DataConfig, prepare_data, read_manifest
from helpers.data import write_padchest

# ---------------------------------------------------------------------------- NIH ChestX-ray14

NIH_COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
               "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]  # fmt: skip
NIH_LABELS = ["Cardiomegaly|Effusion", "No Finding", "Hernia", "No Finding", "Effusion", "Nodule|Mass|Effusion",
              "No Finding", "Cardiomegaly", "No Finding", "Infiltration", "No Finding", "Effusion"]  # fmt: skip


def write_nih(root: Path, bom: bool = True) -> dict:
    """Data_Entry_2017.csv (as exported, with a BOM), images spread over images_001/images/ and
    images_002/images/, train_val_list.txt and test_list.txt: 12 images of 6 patients."""
    rows = []
    for i, finding in enumerate(NIH_LABELS):
        patient, follow_up = i // 2 + 1, i % 2
        name = f"{patient:08d}_{follow_up:03d}.png"
        folder = root / f"images_{1 + i // 6:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 40 + i, np.uint8)).save(folder / name)
        rows.append([name, finding, follow_up, patient, 50, "M", "PA", 2500, 2048, 0.143, 0.143])
    csv = root / "Data_Entry_2017.csv"
    pd.DataFrame(rows, columns=NIH_COLUMNS).to_csv(csv, index=False, encoding="utf-8-sig" if bom else "utf-8")
    names = [r[0] for r in rows]
    (root / "train_val_list.txt").write_text("\n".join(names[:8]) + "\n")  # patients 1-4
    (root / "test_list.txt").write_text("\n".join(names[8:]) + "\n")  # patients 5-6
    return {
        "image_root": str(root), "labels": {"all": str(csv)}, "labels_format": "delimited",
        "labels_column": "Finding Labels", "labels_delimiter": "|", "id_column": "Image Index",
        "path_column": "Image Index", "locate_images": True, "patient_column": "Patient ID",
        "metadata_columns": [c for c in NIH_COLUMNS if c not in ("Image Index", "Finding Labels")],
        "split_lists": {"train": str(root / "train_val_list.txt"), "test": str(root / "test_list.txt")},
        "carve": {"val": 0.25}, "check_images": "header",
    }  # fmt: skip


def prepare(data: dict, out: Path) -> pd.DataFrame:
    prepare_data(DataConfig(**data), out / "manifest.csv")
    return read_manifest(out / "manifest.csv")


def fails(data: dict, out: Path, error, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        prepare(data, out)
    assert not (out / "manifest.csv").exists() and not list(out.glob(".manifest.csv.tmp-*"))


def test_nih_as_downloaded(tmp_path):
    data = write_nih(tmp_path / "nih")
    m = prepare(data, tmp_path)
    classes = list(m.columns[3:])
    assert classes == ["Cardiomegaly", "Effusion", "No Finding", "Hernia", "Nodule", "Mass", "Infiltration"]  # as first seen
    row = m.set_index("id").loc["00000003_001.png"]  # "Nodule|Mass|Effusion"
    assert [c for c in classes if row[c]] == ["Effusion", "Nodule", "Mass"] and row["split"] != "test"
    assert m.set_index("id").loc["00000001_001.png", "No Finding"] == 1
    assert (m["split"] == "test").sum() == 4 and set(m["split"]) == {"train", "val", "test"}
    assert Path(m.set_index("id").loc["00000006_001.png", "path"]).parent.parent.name == "images_002"  # found by name
    patients = m["id"].str[:8]
    assert patients.groupby(patients).apply(lambda p: m.loc[p.index, "split"].nunique()).max() == 1  # no leak
    assert (m["split"] == "val").sum() == 2  # 0.25 of the 4 training patients: one patient, both images
    again = prepare(data, tmp_path / "again")
    assert again.equals(m)  # the carving is seeded
    assert prepare({**data, "split_seed": 1}, tmp_path / "other").set_index("id")["split"].ne(m.set_index("id")["split"]).any()


def test_nih_image_name_found_twice(tmp_path):
    data = write_nih(tmp_path / "nih")
    copy = tmp_path / "nih" / "images_002" / "images" / "00000001_000.png"
    copy.write_bytes((tmp_path / "nih" / "images_001" / "images" / "00000001_000.png").read_bytes())
    fails(data, tmp_path, InputError, r"1 image file name\(s\) occur more than once under data.image_root=.*00000001_000.png: "
                                      r".*images_00[12]/images/00000001_000.png, .*images_00[12]/images/00000001_000.png")


def test_nih_image_missing(tmp_path):
    data = write_nih(tmp_path / "nih")
    (tmp_path / "nih" / "images_002" / "images" / "00000005_000.png").unlink()
    fails(data, tmp_path, InputError, r"1 of 12 images are nowhere under data.image_root=.*00000005_000.png \(.*Data_Entry_2017.csv line 10\)")


def test_nih_unknown_finding_names_the_row(tmp_path):
    data = write_nih(tmp_path / "nih")
    classes = ["Cardiomegaly", "Effusion", "No Finding", "Nodule", "Mass", "Infiltration"]  # no Hernia
    fails({**data, "classes": classes}, tmp_path, InputError,
          r"Data_Entry_2017.csv: column 'Finding Labels' names 1 finding\(s\) that are not classes \(data.classes\): "
          r"'Hernia' on line\(s\) 4\. Add them to data.classes, or to data.ignore_labels")  # fmt: skip
    m = prepare({**data, "classes": classes, "ignore_labels": ["Hernia"]}, tmp_path)
    assert list(m.columns[3:]) == classes and m.set_index("id").loc["00000002_000.png", classes].sum() == 0


def test_nih_patient_in_two_split_lists(tmp_path):
    data = write_nih(tmp_path / "nih")
    train = (tmp_path / "nih" / "train_val_list.txt").read_text().split()
    test = (tmp_path / "nih" / "test_list.txt").read_text().split()
    train, test = train[:-1], test + train[-1:]  # 00000004_001 to test, 00000004_000 stays in train
    (tmp_path / "nih" / "train_val_list.txt").write_text("\n".join(train))
    (tmp_path / "nih" / "test_list.txt").write_text("\n".join(test))
    fails(data, tmp_path, InputError,
          r"1 patient\(s\) of column 'Patient ID' \(data.patient_column\) are in more than one split: '4' in "
          r"test \(.*Data_Entry_2017.csv\), train \(.*Data_Entry_2017.csv\)\. .*data.allow_patient_overlap: true")  # fmt: skip
    m = prepare({**data, "allow_patient_overlap": True}, tmp_path)
    assert set(m.loc[m["id"].str.startswith("00000004"), "split"]) == {"train", "test"}


def test_nih_row_in_no_split_list(tmp_path):
    data = write_nih(tmp_path / "nih")
    test = (tmp_path / "nih" / "test_list.txt").read_text().split()
    (tmp_path / "nih" / "test_list.txt").write_text("\n".join(test[:-1]))
    fails(data, tmp_path, InputError, r"Data_Entry_2017.csv: 1 row\(s\) are in no split list of data.split_lists \(train, test\), lines 13")


# ---------------------------------------------------------------------------- CheXpert

OBSERVATIONS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices"]  # fmt: skip


def write_chexpert(root: Path) -> dict:
    """CheXpert-v1.0-small/{train,valid}.csv with Path, Sex, Age, Frontal/Lateral, AP/PA and the 14 observations
    (1.0, 0.0, -1.0, blank), images under CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_frontal.jpg."""
    rng = np.random.default_rng(0)
    base = root / "CheXpert-v1.0-small"
    out = {}
    for split, n in (("train", 16), ("valid", 4)):
        rows = []
        for i in range(n):
            rel = f"CheXpert-v1.0-small/{split}/patient{(i // 2 + (0 if split == 'train' else 100)):05d}/study{i % 2 + 1}/view1_frontal.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / rel)
            values = ["1.0" if (i + k) % 5 == 0 else "" if (i + k) % 5 == 1 else "0.0" for k in range(len(OBSERVATIONS))]
            rows.append([rel, "Female", "68", "Frontal", "AP", *values])
        frame = pd.DataFrame(rows, columns=["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS])
        frame.to_csv(base / f"{split}.csv", index=False)
        out[split] = base / f"{split}.csv"
    return {
        "image_root": str(root), "labels": {"train": str(out["train"]), "test": str(out["valid"])},
        "id_column": "Path", "path_column": "Path", "metadata_columns": ["Sex", "Age", "Frontal/Lateral", "AP/PA"],
        "patient_regex": r"patient(\d+)", "carve": {"val": 0.25}, "blank": "zeros", "check_images": "header",
    }  # fmt: skip


def set_cell(path: Path, row: int, column: str, value: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("policy, expected", [("zeros", 0), ("ones", 1)])
def test_chexpert_uncertain_policies(tmp_path, policy, expected):
    data = write_chexpert(tmp_path / "cx")
    set_cell(Path(data["labels"]["train"]), 3, "Edema", "-1.0")
    m = prepare({**data, "uncertain": policy}, tmp_path)
    row = m.set_index("id").loc[pd.read_csv(data["labels"]["train"])["Path"][3]]
    assert row["Edema"] == expected
    assert list(m.columns[3:]) == OBSERVATIONS
    patients = m["path"].str.extract(r"patient(\d+)")[0]
    assert m.groupby(patients)["split"].nunique().max() == 1 and (m["split"] == "val").sum() == 4  # 2 of 8 patients
    split = write_classes(LongTailConfig(head_classes=["No Finding"], tail_classes=["Fracture"]), tmp_path / "manifest.csv",
                          tmp_path / "classes.json", {"labels_format": "columns", "uncertain": policy, "blank": "zeros"})  # fmt: skip
    assert json.loads((tmp_path / "classes.json").read_text())["labels"]["uncertain"] == policy
    assert split.labels == {"labels_format": "columns", "uncertain": policy, "blank": "zeros"}


def test_chexpert_uncertain_and_blank_are_errors_by_default(tmp_path):
    data = write_chexpert(tmp_path / "cx")
    set_cell(Path(data["labels"]["train"]), 3, "Edema", "-1.0")
    fails(data, tmp_path, InputError, r"(?s)train.csv: label values must be 0 or 1.*column 'Edema': 1 row\(s\): line 5 \('-1.0'\)"
                                      r".*data.uncertain: zeros or ones")  # fmt: skip
    fails({**data, "uncertain": "zeros", "blank": "error"}, tmp_path, InputError,
          r"(?s)column 'No Finding': \d+ row\(s\): line \d+ \(blank\).*blank ones with data.blank: zeros")  # fmt: skip


def test_chexpert_patient_regex_must_match(tmp_path):
    data = write_chexpert(tmp_path / "cx")
    fails({**data, "patient_regex": r"subject(\d+)"}, tmp_path, InputError,
          r"train.csv: data.patient_regex 'subject\(\\d\+\)' finds no patient id in column 'Path' on 20 row\(s\)")  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.patient_regex: 'patient\\d\+' has 0 groups"):
        DataConfig(**{**data, "patient_regex": r"patient\d+"})


# ---------------------------------------------------------------------------- PadChest


def test_padchest_as_downloaded(tmp_path):
    data = write_padchest(tmp_path / "pc")
    m = prepare(data, tmp_path)
    assert list(m.columns[3:]) == ["normal", "pleural effusion", "cardiomegaly", "nodule"]
    row = m.set_index("id").loc["1004_04.png"]
    assert (row["nodule"], row["pleural effusion"], row["cardiomegaly"]) == (1, 1, 0)
    assert m.set_index("id").loc["1006_06.png", "cardiomegaly"] == 1  # an empty name in the list is no class
    assert (m["split"] == "val").sum() == 2 and (m["split"] == "test").sum() == 2  # one patient of six each
    assert m.groupby(m["id"].map(lambda i: int(i[:4]) // 2))["split"].nunique().max() == 1  # by PatientID p{i // 2}
    pixels = np.asarray(open_image(m["path"].iloc[0]))  # 12 bits in 16: read full range, not nearly black
    assert pixels.min() == 0 and pixels.max() == 255


def test_padchest_malformed_list_and_blank(tmp_path):
    data = write_padchest(tmp_path / "pc")
    csv = Path(data["labels"]["all"])
    set_cell(csv, 2, "Labels", "['cardiomegaly'")
    fails(data, tmp_path, InputError, r"column 'Labels' is not a list of names .* on 1 row\(s\), lines 4 \(first: \"\['cardiomegaly'\"\)")
    set_cell(csv, 2, "Labels", "__import__('os').system('echo unsafe')")  # parsed, never run
    fails(data, tmp_path, InputError, r"column 'Labels' is not a list of names .* lines 4")
    set_cell(csv, 2, "Labels", "")
    fails(data, tmp_path, InputError, r"column 'Labels' is blank on 1 row\(s\), lines 4; set data.blank: zeros")
    assert prepare({**data, "blank": "zeros"}, tmp_path).set_index("id").loc["1002_02.png", "cardiomegaly"] == 0


def test_layout_config_errors():
    with pytest.raises(ConfigError, match=r"data.labels: no val split; give data.labels.val, a data.split_lists.val"):
        DataConfig(labels={"train": "a.csv", "test": "b.csv"})
    with pytest.raises(ConfigError, match=r"data.labels: 'all' .* and per-split files \(train\) both given"):
        DataConfig(labels={"all": "a.csv", "train": "b.csv"}, carve={"val": 0.1, "test": 0.1})
    with pytest.raises(ConfigError, match=r"data.carve: test is given by a labels file or list already"):
        DataConfig(labels={"train": "a.csv", "val": "b.csv", "test": "c.csv"}, carve={"test": 0.1})
    with pytest.raises(ConfigError, match=r"data.labels_column: labels_format delimited reads the class names from one column"):
        DataConfig(labels={"all": "a.csv"}, carve={"val": 0.1, "test": 0.1}, labels_format="delimited")
    with pytest.raises(ConfigError, match=r"data.uncertain: 'u-ones' is not one of \['error', 'zeros', 'ones'\] \(.*U-Zeros"):
        DataConfig(uncertain="u-ones")


# ---------------------------------------------------------------------------- docs/datasets.md

def test_every_config_block_of_the_data_set_page_is_a_valid_config():
    """The page's blocks are what users copy: each must pass the schema and the data section's own checks."""
    import re

    import yaml

    from helpers.data import REPO
    from ltaug.common.config import validate_config

    page = (REPO / "docs" / "datasets.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", page, re.S)
    assert len(blocks) == 4  # NIH, CheXpert, PadChest, MIMIC-CXR-JPG
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    for block in blocks:
        section = yaml.safe_load(block)["data"]
        config = validate_config({**base, "demo": {**base["demo"], "enabled": False}, "data": section}, source="docs")
        DataConfig(**config["data"])
