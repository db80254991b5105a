"""Synthetic sets: the one on-disk layout every augmentation method writes and evaluation reads.

Elberg, Parra, Petrache (arXiv 2405.01705), Table 1 compares methods that each add the same
number of samples per tail class to the real training data: the fused samples (Ours@s),
SMOTE, plain text-to-image generation (RoentGen@N) and, here, plain resampling. Each
method writes a directory ``results/synthetic/{method}/``:

    manifest.csv   dicom_id, provenance columns (at least tail_class: the tail class the sample
                   was made for; method-specific others such as tail_id, head_id, source_id),
                   path (relative to the directory), then one 0/1 column per class, in the order
                   of classes.json. Exactly n_per_class rows per tail class.
    images/*.png   8-bit images, all of one size
    set.json       {"method", "n_per_class", "classes", "tail", "provenance_columns", ...}

:func:`write_synthetic_set` (or :class:`SyntheticSetWriter`, to stream a large set) writes
it atomically; :func:`read_synthetic_set` checks it and says what is wrong. Columns are read
by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path

RESERVED = ("dicom_id", "path")  # columns every manifest has besides provenance and classes
MAX_LISTED = 5


@dataclass(frozen=True)
class SyntheticSet:
    """A checked synthetic set: ``frame`` is manifest.csv (labels uint8), ``info`` is set.json."""

    root: Path  # the set's directory
    frame: pd.DataFrame  # dicom_id, provenance..., path (relative to root), one uint8 column per class
    info: dict  # set.json

    @property
    def method(self) -> str:
        return self.info["method"]

    def paths(self) -> list[str]:
        """Absolute image paths, in manifest order."""
        return [str(self.root / p) for p in self.frame["path"]]

    def labels(self, classes: Sequence[str]) -> np.ndarray:
        """(N, K) uint8 labels in the order of ``classes``."""
        return self.frame[list(classes)].to_numpy(dtype=np.uint8)


def sample_ids(method: str, tail_class: Sequence[str], start: int = 0) -> list[str]:
    """Ids "{method}-{class slug}-{i:05d}", i counting 0.. within each tail class from ``start``."""
    counters: dict[str, int] = {}
    out = []
    for name in tail_class:
        i = counters.get(name, start)
        counters[name] = i + 1
        out.append(f"{method}-{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}-{i:05d}")
    return out


class SyntheticSetWriter:
    """Stream a synthetic set to disk batch by batch; the directory appears only when it is complete.

    ``with SyntheticSetWriter(dir, method, classes, tail, n_per_class) as w: w.add(images,
    provenance, labels)``, as many times as needed; on leaving the block the counts are
    checked and manifest.csv and set.json written. An error anywhere leaves nothing behind.
    """

    def __init__(
        self,
        directory: str | Path,
        method: str,
        classes: Sequence[str],
        tail: Sequence[str],
        n_per_class: int,
        info: dict | None = None,
    ):
        self.directory, self.method = Path(directory), method
        self.classes, self.tail, self.n_per_class = list(classes), list(tail), int(n_per_class)
        self.info = dict(info or {})
        unknown = [t for t in self.tail if t not in self.classes]
        if unknown:
            raise ValueError(f"tail class(es) {unknown} are not among the classes {self.classes}")
        self._rows: list[pd.DataFrame] = []
        self._shape: tuple[int, ...] | None = None
        self._provenance: list[str] | None = None

    def __enter__(self) -> SyntheticSetWriter:
        self._atomic = atomic_path(self.directory)
        self._tmp = self._atomic.__enter__()
        (self._tmp / "images").mkdir(parents=True)
        return self

    def add(self, images: np.ndarray, provenance: pd.DataFrame, labels: np.ndarray, ids: Sequence[str] | None = None):
        """Append a batch: (B, H, W, 3) or (B, H, W) uint8 images, B provenance rows (tail_class and
        any other columns), (B, K) 0/1 labels in ``classes`` order. ``ids`` default to
        :func:`sample_ids` (per-class counters continue across batches)."""
        images, labels = np.asarray(images), np.asarray(labels)
        provenance = provenance.reset_index(drop=True)
        n = len(provenance)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != n:
            raise ValueError(f"images must be (B, H, W[, 3]) uint8 with B = {n} rows, not {images.shape} {images.dtype}")
        if self._shape is None:
            self._shape = images.shape[1:]
        elif images.shape[1:] != self._shape:
            raise ValueError(f"images of shape {images.shape[1:]} after images of shape {self._shape}; one size per set")
        if labels.shape != (n, len(self.classes)) or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be (B, {len(self.classes)}) 0/1 in classes order, not {labels.shape}")
        if "tail_class" not in provenance.columns:
            raise ValueError("provenance needs a tail_class column (the tail class each sample was made for)")
        clash = [c for c in provenance.columns if c in RESERVED or c in self.classes]
        if clash:
            raise ValueError(f"provenance columns {clash} clash with dicom_id, path or a class name")
        columns = ["tail_class"] + [c for c in provenance.columns if c != "tail_class"]
        if self._provenance is None:
            self._provenance = columns
        elif columns != self._provenance:
            raise ValueError(f"provenance columns {columns} differ from the first batch's {self._provenance}")
        bad = sorted(set(provenance["tail_class"]) - set(self.tail))
        if bad:
            raise ValueError(f"tail_class values {bad} are not tail classes ({self.tail})")
        k = np.array([self.classes.index(t) for t in provenance["tail_class"]], dtype=int)
        if n and not labels[np.arange(n), k].all():
            raise ValueError("every sample must be labelled positive for the tail class it was made for")
        done = sum(len(r) for r in self._rows)
        if ids is None:
            before = pd.concat([r["tail_class"] for r in self._rows]).tolist() if self._rows else []
            ids = sample_ids(self.method, before + provenance["tail_class"].tolist())[done:]
        ids = [str(i) for i in ids]
        rows = pd.DataFrame({"dicom_id": ids})
        for c in self._provenance:
            rows[c] = provenance[c].to_numpy()
        rows["path"] = [f"images/{i}.png" for i in ids]
        rows[self.classes] = labels.astype(np.uint8)
        for image, rel in zip(images, rows["path"]):
            Image.fromarray(image).save(self._tmp / rel, format="PNG")
        self._rows.append(rows)

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """A table of the set's own (e.g. the oracle's boxes.csv) beside manifest.csv, written with the set."""
        if name in ("manifest.csv", "set.json", "images") or "/" in name:
            raise ValueError(f"{name!r} is one of the set's own files or not a plain file name")
        frame.to_csv(self._tmp / name, index=False, lineterminator="\n")

    def __exit__(self, kind, value, traceback) -> bool:
        try:
            if kind is None:
                self._finish()
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return bool(self._atomic.__exit__(kind, value, traceback))

    def _finish(self) -> None:
        frame = pd.concat(self._rows, ignore_index=True) if self._rows else pd.DataFrame()
        counts = frame["tail_class"].value_counts().to_dict() if len(frame) else {}
        wrong = {t: counts.get(t, 0) for t in self.tail if counts.get(t, 0) != self.n_per_class}
        if wrong:
            raise ValueError(f"{self.method}: expected {self.n_per_class} samples per tail class, got {wrong}")
        if frame["dicom_id"].duplicated().any():
            raise ValueError(f"{self.method}: duplicate ids {frame.loc[frame['dicom_id'].duplicated(), 'dicom_id'].tolist()[:5]}")
        frame.to_csv(self._tmp / "manifest.csv", index=False, lineterminator="\n")
        info = {
            "method": self.method,
            "n_per_class": self.n_per_class,
            "classes": self.classes,
            "tail": self.tail,
            "provenance_columns": self._provenance,
            "n": len(frame),
            "image_shape": list(self._shape),
            **self.info,
        }
        (self._tmp / "set.json").write_text(json.dumps(info, indent=2) + "\n")


def write_synthetic_set(
    directory: str | Path,
    method: str,
    images: np.ndarray,
    provenance: pd.DataFrame,
    labels: np.ndarray,
    classes: Sequence[str],
    tail: Sequence[str],
    n_per_class: int,
    info: dict | None = None,
    ids: Sequence[str] | None = None,
) -> None:
    """Write a whole synthetic set at once (see :class:`SyntheticSetWriter` for the arguments)."""
    with SyntheticSetWriter(directory, method, classes, tail, n_per_class, info) as writer:
        writer.add(images, provenance, labels, ids)


def read_synthetic_set(
    directory: str | Path, classes: Sequence[str], tail: Sequence[str] | None = None, n_per_class: int | None = None
) -> SyntheticSet:
    """Open and check a synthetic set against the workflow's ``classes`` (and, if given, tail and n_per_class).

    Raises InputError naming the file and what is wrong: a missing directory, manifest.csv or
    set.json; an empty set; missing columns; labels other than 0/1; duplicate ids; a tail class
    with another number of samples than set.json (or ``n_per_class``) says; a sample not
    labelled positive for its tail class; a listed image that does not exist.
    """
    root = Path(directory)
    rerun = f"delete {root} and rerun the stage that writes it"
    if not root.is_dir():
        raise InputError(f"{root}: no synthetic set here; run the stage that makes it (baselines or generate).")
    manifest, meta = root / "manifest.csv", root / "set.json"
    for file in (manifest, meta):
        if not file.is_file():
            raise InputError(f"{file}: missing; a synthetic set needs manifest.csv, set.json and images/; {rerun}.")
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta}: not valid JSON ({exc}); {rerun}.") from exc
    for key in ("method", "n_per_class", "classes", "tail"):
        if key not in info:
            raise InputError(f"{meta}: no key {key!r}; expected method, n_per_class, classes, tail; {rerun}.")
    if list(info["classes"]) != list(classes):
        raise InputError(
            f"{meta}: the set was made for classes {info['classes']}, but the workflow's classes are "
            f"{list(classes)}; {rerun}."
        )
    if tail is not None and list(info["tail"]) != list(tail):
        raise InputError(f"{meta}: the set was made for tail classes {info['tail']}, not {list(tail)}; {rerun}.")
    if n_per_class is not None and info["n_per_class"] != n_per_class:
        raise InputError(
            f"{meta}: the set has {info['n_per_class']} samples per tail class but fusion.n_per_class is "
            f"{n_per_class}; {rerun}."
        )
    try:
        frame = pd.read_csv(manifest, dtype={"dicom_id": str, "path": str, "tail_class": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{manifest}: the file is empty; expected a header and one row per sample; {rerun}.") from None
    if len(frame) == 0:
        raise InputError(
            f"{manifest}: the synthetic set of method {info['method']!r} has no samples; a method that made "
            f"nothing cannot be evaluated (expected {info['n_per_class']} per tail class); {rerun}."
        )
    missing = [c for c in (*RESERVED, "tail_class", *classes) if c not in frame.columns]
    if missing:
        raise InputError(f"{manifest}: no column(s) {', '.join(map(repr, missing))}; columns are {list(frame.columns)}; {rerun}.")
    values = frame[list(classes)]
    bad = ~values.isin([0, 1]).all(axis=1)
    if bad.any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(bad)[:MAX_LISTED])
        raise InputError(f"{manifest}: labels must be 0 or 1; line(s) {lines} hold other values; {rerun}.")
    frame = frame.astype({c: np.uint8 for c in classes})
    dupes = frame["dicom_id"][frame["dicom_id"].duplicated()].tolist()
    if dupes:
        raise InputError(f"{manifest}: duplicate dicom_id(s) {dupes[:MAX_LISTED]}; {rerun}.")
    unknown = sorted(set(frame["tail_class"]) - set(info["tail"]))
    if unknown:
        raise InputError(f"{manifest}: tail_class value(s) {unknown} are not tail classes {info['tail']}; {rerun}.")
    counts = frame["tail_class"].value_counts().to_dict()
    wrong = {t: counts.get(t, 0) for t in info["tail"] if counts.get(t, 0) != info["n_per_class"]}
    if wrong:
        shown = ", ".join(f"{t}: {n}" for t, n in wrong.items())
        raise InputError(
            f"{manifest}: expected {info['n_per_class']} samples per tail class (set.json n_per_class), "
            f"found {shown}; {rerun}."
        )
    k = frame["tail_class"].map(list(classes).index).to_numpy()
    unlabelled = np.flatnonzero(values.to_numpy()[np.arange(len(frame)), k] != 1)
    if len(unlabelled):
        lines = ", ".join(str(i + 2) for i in unlabelled[:MAX_LISTED])
        raise InputError(f"{manifest}: line(s) {lines}: sample not labelled positive for its tail_class; {rerun}.")
    absent = [p for p in frame["path"] if not (root / p).is_file()]
    if absent:
        raise InputError(
            f"{manifest}: {len(absent)} listed image(s) do not exist under {root}, e.g. {absent[:MAX_LISTED]}; {rerun}."
        )
    return SyntheticSet(root, frame, info)


def training_rows(manifest: pd.DataFrame, classes: Sequence[str], synthetic: SyntheticSet | None) -> pd.DataFrame:
    """One table of what a classifier trains on with a method: the real training rows, then the set's synthetic rows.

    Columns: id, path (absolute), synthetic (0 real, 1 synthetic), one 0/1 column per class in the order of
    ``classes`` (classes.json's), then the set's provenance columns (tail_class, tail_id, head_id, ...; empty on real
    rows). ``manifest`` is prepare_data's (id, path, split, classes); ``synthetic`` None gives the real rows alone.
    """
    train = manifest[manifest["split"] == "train"]
    real = pd.DataFrame({"id": train["id"].astype(str).to_numpy(), "path": [str(Path(p).resolve()) for p in train["path"]],
                         "synthetic": 0})  # fmt: skip
    real[list(classes)] = train[list(classes)].to_numpy(dtype=np.uint8)
    if synthetic is None:
        return real
    frame = synthetic.frame
    extra = [c for c in frame.columns if c not in (*RESERVED, *classes)]  # provenance, in the set's order
    fake = pd.DataFrame({"id": frame["dicom_id"].astype(str).to_numpy(), "path": [str(Path(p).resolve()) for p in synthetic.paths()],
                         "synthetic": 1})  # fmt: skip
    fake[list(classes)] = synthetic.labels(classes)
    for c in extra:
        fake[c] = frame[c].to_numpy()
    return pd.concat([real, fake], ignore_index=True)[["id", "path", "synthetic", *classes, *extra]]


def export_training_rows(path: str | Path, manifest: pd.DataFrame, classes: Sequence[str], synthetic: SyntheticSet | None) -> pd.DataFrame:
    """Stage export_training_set: :func:`training_rows` as a CSV, written atomically."""
    rows = training_rows(manifest, classes, synthetic)
    with atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False, lineterminator="\n")
    return rows

