"""Data the tests write: tiny labels files in the CXR-LT layout with real images on disk, latent stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ltaug.data.manifest import DataConfig, prepare_data, read_manifest


REPO = Path(__file__).resolve().parents[2]


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


def write_latent_store(path: Path, z: np.ndarray, labels: np.ndarray, classes: list[str], split: str = "train",
                       chunk: int = 64, **attrs) -> Path:  # fmt: skip
    """A complete latent store in the layout encode_latents writes (see ltaug.backbone.latents), from arrays."""
    import zarr

    from ltaug.common.shards import COMPRESSOR

    root = zarr.open_group(path, mode="w", zarr_format=3)
    n = len(z)
    root.create_array("z", data=np.asarray(z, dtype=np.float32), chunks=(chunk, *z.shape[1:]), compressors=COMPRESSOR)
    root.create_array("labels", data=np.asarray(labels, dtype=np.uint8), chunks=(chunk, labels.shape[1]), compressors=COMPRESSOR)
    ids = np.array([f"{split}-{i:05d}" for i in range(n)], dtype=str)
    root.create_array("ids", shape=(n,), chunks=(chunk,), dtype=str, compressors=COMPRESSOR)[:] = ids
    defaults = {"classes": list(classes), "split": split, "model_path": "tiny", "model_fingerprint": "f" * 64,
                "scaling_factor": 1.0, "shift_factor": None, "image_size": 8 * z.shape[-1], "mode": "mean", "seed": 0}  # fmt: skip
    root.attrs.update({**defaults, **attrs, "complete": True})
    return path


def synthetic_latents(n: int, prevalence: list[float], shape=(4, 8, 8), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Demo-like latents: a smooth shared layout, a smooth per-sample variation and a little noise;
    class k adds +2 to one channel in its own 2 x 2 patch.

    Exactly round(p_k * n) positives per class, several classes per sample possible.
    """
    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    base = np.stack([np.cos(np.pi * (k + 1) * xx / 2) * np.sin(np.pi * yy * (k % 2 + 1)) for k in range(c)])
    gains = rng.normal(1.0, 0.3, size=(n, c, 1, 1))
    shifts = rng.normal(0.0, 0.3, size=(n, c, 1, 1)) * (xx + yy)
    z = (base * gains + shifts + 0.1 * rng.standard_normal((n, *shape))).astype(np.float32)
    labels = np.zeros((n, len(prevalence)), dtype=np.uint8)
    for k, p in enumerate(prevalence):
        rows = rng.choice(n, size=max(1, round(p * n)), replace=False)
        labels[rows, k] = 1
        y, x = (2 * k) % (h - 1), (3 * k + 1) % (w - 1)
        z[rows, k % c, y : y + 2, x : x + 2] += 2.0
    return z, labels

PADCHEST_LABELS = ["['normal']", "['pleural effusion', 'cardiomegaly']", "['cardiomegaly']", "['normal']",
                   "['nodule', 'pleural effusion']", "['normal']", "['cardiomegaly', '']", "['normal']",
                   "['pleural effusion']", "['normal']", "['cardiomegaly']", "['normal']"]  # fmt: skip


def write_padchest(root: Path) -> dict:
    """One CSV with ImageID, ImageDir, PatientID, Labels (a list literal of lower-case names); 16-bit grayscale
    PNGs holding 12 bits, in folders named by ImageDir."""
    rows = []
    for i, labels in enumerate(PADCHEST_LABELS):
        name, folder = f"{1000 + i}_{i:02d}.png", str(i % 3)
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.tile(np.linspace(0, 4095, 16).astype(np.uint16), (16, 1))).save(root / folder / name)
        rows.append({"ImageID": name, "ImageDir": folder, "StudyDate_DICOM": "20150101", "PatientID": f"p{i // 2}",
                     "Projection": "PA", "Labels": labels})  # fmt: skip
    csv = root / "PADCHEST_chest_x_ray_images_labels_160K.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return {
        "image_root": str(root), "labels": {"all": str(csv)}, "labels_format": "list", "labels_column": "Labels",
        "id_column": "ImageID", "path_column": "ImageID", "locate_images": True, "patient_column": "PatientID",
        "metadata_columns": ["ImageDir", "StudyDate_DICOM", "Projection"], "carve": {"val": 1 / 6, "test": 1 / 6},
        "check_images": "full",
    }  # fmt: skip


def run_prepare(data: dict, out: Path, **overrides) -> pd.DataFrame:
    """Stage prepare_data on the data section ``data`` (with ``overrides``) into ``out``; the manifest it wrote."""
    prepare_data(DataConfig(**{**data, **overrides}), out / "manifest.csv")
    return read_manifest(out / "manifest.csv")
