"""Shared fixtures: tiny labels files in the CXR-LT layout with real images on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent

# The 19 classes of the MICCAI-2023 MIMIC-CXR-LT labels files, in their column order.
MICCAI_19 = [
    "Support Devices", "Lung Opacity", "Cardiomegaly", "Pleural Effusion", "Atelectasis",
    "Pneumonia", "Edema", "No Finding", "Enlarged Cardiomediastinum", "Consolidation",
    "Pneumothorax", "Fracture", "Calcification of the Aorta", "Tortuous Aorta",
    "Subcutaneous Emphysema", "Lung Lesion", "Pneumomediastinum", "Pneumoperitoneum", "Pleural Other",
]  # fmt: skip
# The 26 classes of the CXR-LT 2023 labels files.
CXR_LT_26 = [
    "Atelectasis", "Calcification of the Aorta", "Cardiomegaly", "Consolidation", "Edema",
    "Emphysema", "Enlarged Cardiomediastinum", "Fibrosis", "Fracture", "Hernia", "Infiltration",
    "Lung Lesion", "Lung Opacity", "Mass", "No Finding", "Nodule", "Pleural Effusion",
    "Pleural Other", "Pleural Thickening", "Pneumomediastinum", "Pneumonia", "Pneumoperitoneum",
    "Pneumothorax", "Subcutaneous Emphysema", "Support Devices", "Tortuous Aorta",
]  # fmt: skip

SMALL_CLASSES = {"Cardiomegaly": 0.5, "Pleural Effusion": 0.25, "Nodule": 0.05, "Fracture": 0.05, "No Finding": 0.3}


def write_dataset(
    root: Path,
    prevalence: dict[str, float] = SMALL_CLASSES,
    n: dict[str, int] | None = None,
    meta: tuple[str, ...] = ("dicom_id", "subject_id", "study_id"),
    path_column: str = "path",
    ext: str = ".png",
    mode: str = "L",
    size: tuple[int, int] = (24, 20),
) -> dict:
    """Write images and one labels CSV per split; return the matching `data` config section.

    Row i of a split is positive for class k when (i + 3k) mod n < round(p_k * n), so the
    counts are known exactly. Columns: metadata, then path, then classes (as CXR-LT files).
    """
    n = n or {"train": 40, "val": 10, "test": 10}
    rng = np.random.default_rng(0)
    labels = {}
    for split, count in n.items():
        rows = []
        for i in range(count):
            image_id = f"{split}-{i:04d}"
            rel = f"files/p10/{split}/{image_id}{ext}"
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3 if mode == "RGB" else 1), dtype=np.uint8)
            (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.squeeze()).convert(mode).save(root / "images" / rel)
            row = {
                "dicom_id": image_id,
                "subject_id": 10_000_000 + i,
                "study_id": 50_000_000 + i,
                "ViewPosition": "PA" if i % 2 else "AP",
            }
            row = {c: row[c] for c in meta}
            row[path_column] = rel
            for k, (c, p) in enumerate(prevalence.items()):
                row[c] = int((i + 3 * k) % count < round(p * count))
            rows.append(row)
        labels[split] = root / f"{split}.csv"
        pd.DataFrame(rows).to_csv(labels[split], index=False)
    return {
        "image_root": str(root / "images"),
        "labels": {s: str(p) for s, p in labels.items()},
        "path_column": path_column,
        "metadata_columns": [c for c in meta],
    }


@pytest.fixture
def dataset(tmp_path) -> dict:
    """A small valid data set; returns its `data` config section."""
    return write_dataset(tmp_path / "data")
