"""Data ingestion: labels CSVs in the CXR-LT layout -> one validated manifest and the class split.

Reads one labels CSV per split (MIMIC-CXR-LT / CXR-LT 2023 style: id and metadata
columns, a path column relative to an image root, one 0/1 column per class), always
by column name, never by position. Classes are split into head and tail either from
explicit lists or from training prevalence thresholds, as the paper's long-tail
setting requires (Elberg et al., arXiv 2405.01705, Sec. 4).

Two stages, so that changing a head/tail threshold reruns only what depends on
the class split, never the encoding of every image:
  prepare_data   labels CSVs + images -> manifest.csv: id, path, split, one 0/1 column per
                 class (splits in train/val/test order); written only once every check passed
  split_classes  manifest.csv -> classes.json: class order, head, tail, medium, training
                 counts and prevalences
Both write atomically: a failed run leaves no output behind.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ltaug.errors import ConfigError, InputError
from ltaug.images import CHECKS, check_image
from ltaug.io import atomic_path

SPLITS = ("train", "val", "test")
MAX_LISTED = 5  # how many offending rows or files an error message lists


@dataclass(frozen=True)
class DataConfig:
    image_root: str = "data/demo/images"  # directory the path column is relative to
    labels: dict[str, str] = field(  # labels CSV per split
        default_factory=lambda: {s: f"data/demo/{s}.csv" for s in SPLITS}
    )
    id_column: str = "dicom_id"  # unique image id
    path_column: str = "path"  # image path relative to image_root
    metadata_columns: list[str] = field(  # non-class columns (absent ones are ignored)
        default_factory=lambda: ["subject_id", "study_id", "dicom_id"]
    )
    classes: list[str] = field(default_factory=list)  # class columns; empty: all non-metadata columns
    check_images: str = "header"  # exists | header | full (see ltaug.images.CHECKS)

    def __post_init__(self):
        missing = [s for s in SPLITS if s not in self.labels]
        if missing:
            raise ConfigError(
                f"data.labels: no labels file for split(s) {', '.join(missing)}; "
                f"give one CSV for each of {', '.join(SPLITS)}."
            )
        if self.check_images not in CHECKS:
            raise ConfigError(f"data.check_images: {self.check_images!r} is not one of {', '.join(CHECKS)}.")


@dataclass(frozen=True)
class LongTailConfig:
    head_classes: list[str] = field(default_factory=list)  # empty: prevalence >= head_min_prevalence
    tail_classes: list[str] = field(default_factory=list)  # empty: prevalence <= tail_max_prevalence
    head_min_prevalence: float = 0.15  # training prevalence threshold for head classes
    tail_max_prevalence: float = 0.02  # training prevalence threshold for tail classes

    def __post_init__(self):
        both = sorted(set(self.head_classes) & set(self.tail_classes))
        if both:
            raise ConfigError(
                f"long_tail.head_classes and long_tail.tail_classes both list {', '.join(map(repr, both))}; "
                f"a class is head or tail, not both: remove it from one of the lists."
            )
        if self.tail_max_prevalence >= self.head_min_prevalence:
            raise ConfigError(
                f"long_tail.tail_max_prevalence ({self.tail_max_prevalence}) must be below "
                f"long_tail.head_min_prevalence ({self.head_min_prevalence}) so no class is both head and tail."
            )


@dataclass(frozen=True)
class ClassSplit:
    classes: list[str]  # label columns, in manifest order
    head: list[str]
    tail: list[str]
    medium: list[str]  # neither head nor tail
    train_counts: dict[str, int]
    prevalence: dict[str, float]  # training prevalence
    n: dict[str, int]  # images per split


# ---------------------------------------------------------------------------- reading


def read_header(path: Path) -> list[str]:
    """The CSV's column names, with duplicates reported (pandas would silently rename them)."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise InputError(f"{path}: the file is empty; expected a header line with the id, path and class columns.")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise InputError(f"{path}: column(s) {', '.join(map(repr, dupes))} appear more than once in the header.")
    return header


def resolve_classes(cfg: DataConfig, headers: dict[str, list[str]]) -> list[str]:
    """The class columns: the configured list, or every non-id/path/metadata column of train."""
    reserved = {cfg.id_column, cfg.path_column, *cfg.metadata_columns}
    for split, header in headers.items():
        src = cfg.labels[split]
        for col, key in ((cfg.id_column, "data.id_column"), (cfg.path_column, "data.path_column")):
            if col not in header:
                raise InputError(
                    f"{src}: no column {col!r} ({key}); the columns are: {', '.join(header)}. "
                    f"Set {key} to the name of the column that holds it."
                )
    if cfg.classes:
        classes = list(cfg.classes)
        for split, header in headers.items():
            absent = [c for c in classes if c not in header]
            if absent:
                raise InputError(
                    f"{cfg.labels[split]}: class(es) {', '.join(map(repr, absent))} from data.classes are not "
                    f"columns of this file; its columns are: {', '.join(header)}. "
                    f"Fix the spelling in data.classes or remove them."
                )
        return classes
    classes = [c for c in headers["train"] if c not in reserved]
    if not classes:
        raise InputError(f"{cfg.labels['train']}: no class columns left after the id, path and metadata columns.")
    for split in ("val", "test"):
        header = headers[split]
        absent = [c for c in classes if c not in header]
        extra = [c for c in header if c not in reserved and c not in classes]
        if absent or extra:
            parts = []
            if absent:
                parts.append(f"lacks class column(s) {', '.join(map(repr, absent))} of {cfg.labels['train']}")
            if extra:
                parts.append(f"has column(s) {', '.join(map(repr, extra))} that the training file lacks")
            raise InputError(
                f"{cfg.labels[split]}: {' and '.join(parts)}. All splits need the same class columns: "
                f"list the classes in data.classes, or add non-class columns to data.metadata_columns."
            )
    return classes


def _label_matrix(df: pd.DataFrame, classes: list[str], src: str) -> np.ndarray:
    """(N, K) uint8 labels; any value other than 0 or 1 is an error that lists the rows."""
    values = df[classes]
    ok = values.isin(["0", "1", "0.0", "1.0"])
    if not ok.to_numpy().all():
        problems = []
        for c in classes:
            bad = np.flatnonzero(~ok[c].to_numpy())
            if len(bad):
                shown = ", ".join(
                    f"line {i + 2} ({values[c].iloc[i]!r})" if values[c].iloc[i] != "" else f"line {i + 2} (blank)"
                    for i in bad[:MAX_LISTED]
                )
                more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
                note = " (no row is 0 or 1: if this is not a class, add it to data.metadata_columns)" if len(bad) == len(df) else ""
                problems.append(f"column {c!r}: {len(bad)} row(s): {shown}{more}{note}")
        raise InputError(
            f"{src}: label values must be 0 or 1, but\n  " + "\n  ".join(problems) + "\n"
            "Map uncertain (-1) and blank labels to 0 or 1 before running (for example U-zeros: -1 and blank -> 0), "
            "or add a non-class column to data.metadata_columns."
        )
    return values.to_numpy().astype(float).astype(np.uint8)


def read_split(cfg: DataConfig, split: str, classes: list[str]) -> pd.DataFrame:
    """One split as a manifest frame: id, path (joined with image_root), split, uint8 labels."""
    src = cfg.labels[split]
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    if len(df) == 0:
        raise InputError(f"{src}: the file has a header but no rows; every split needs images.")
    for col, key in ((cfg.id_column, "data.id_column"), (cfg.path_column, "data.path_column")):
        blank = np.flatnonzero(df[col].str.strip().to_numpy() == "")
        if len(blank):
            lines = ", ".join(str(i + 2) for i in blank[:MAX_LISTED])
            raise InputError(f"{src}: column {col!r} ({key}) is blank on {len(blank)} row(s), lines {lines}.")
    labels = _label_matrix(df, classes, src)
    out = pd.DataFrame(
        {
            "id": df[cfg.id_column].to_numpy(),
            "path": [os.path.join(cfg.image_root, p) for p in df[cfg.path_column]],
            "split": split,
            "_line": np.arange(len(df)) + 2,
        }
    )
    return pd.concat([out, pd.DataFrame(labels, columns=classes)], axis=1)


# ---------------------------------------------------------------------------- checks


def check_unique_ids(frame: pd.DataFrame, cfg: DataConfig) -> None:
    dup = frame[frame["id"].duplicated(keep=False)]
    if len(dup):
        groups = dup.groupby("id", sort=False)
        shown = "; ".join(
            f"{i!r} at " + ", ".join(f"{cfg.labels[s]} line {n}" for s, n in zip(g["split"], g["_line"]))
            for i, g in list(groups)[:MAX_LISTED]
        )
        raise InputError(
            f"{groups.ngroups} id(s) in column {cfg.id_column!r} (data.id_column) appear more than once: {shown}. "
            f"Every image needs a unique id across all splits; remove the repeated rows, or set data.id_column "
            f"to a column that identifies images (e.g. dicom_id)."
        )


def check_images(frame: pd.DataFrame, cfg: DataConfig, threads: int = 1) -> None:
    """Every image exists; at 'header' or 'full' it also opens (errors name the file and its CSV line)."""
    exists = np.fromiter((os.path.isfile(p) for p in frame["path"]), dtype=bool, count=len(frame))
    if not exists.all():
        missing = frame[~exists]
        shown = "\n  ".join(
            f"{p} ({cfg.labels[s]} line {n})"
            for p, s, n in zip(missing["path"][:MAX_LISTED], missing["split"], missing["_line"])
        )
        raise InputError(
            f"{len(missing)} of {len(frame)} images listed in the labels files do not exist under "
            f"data.image_root={cfg.image_root!r}; the first {min(len(missing), MAX_LISTED)}:\n  {shown}\n"
            "Check data.image_root and data.path_column, or remove the rows of images you do not have."
        )
    if cfg.check_images == "exists":
        return
    where = [f"{cfg.labels[s]} line {n}" for s, n in zip(frame["split"], frame["_line"])]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        # list() re-raises the first failure in manifest order
        list(pool.map(check_image, frame["path"], [cfg.check_images] * len(frame), where))


def split_classes(cfg: LongTailConfig, manifest: pd.DataFrame, source: str = "the manifest") -> ClassSplit:
    """Head and tail classes from explicit lists or training prevalence, checked against the data.

    ``manifest`` is the frame :func:`prepare_data` writes; its class columns follow ``split``.
    """
    classes = list(manifest.columns[manifest.columns.get_loc("split") + 1 :])
    train = manifest[manifest["split"] == "train"]
    counts = {c: int(train[c].sum()) for c in classes}
    prevalence = {c: counts[c] / len(train) for c in classes}
    for key, listed in (("long_tail.head_classes", cfg.head_classes), ("long_tail.tail_classes", cfg.tail_classes)):
        unknown = [c for c in listed if c not in classes]
        if unknown:
            raise ConfigError(
                f"{key}: {', '.join(map(repr, unknown))} not among the classes ({', '.join(classes)}); "
                f"fix the spelling, or add the class to data.classes."
            )
    if cfg.head_classes:
        head = set(cfg.head_classes)
    else:
        head = {c for c in classes if prevalence[c] >= cfg.head_min_prevalence} - set(cfg.tail_classes)
    if cfg.tail_classes:
        tail = set(cfg.tail_classes)
    else:
        tail = {c for c in classes if prevalence[c] <= cfg.tail_max_prevalence} - head
    head = [c for c in classes if c in head]  # manifest order
    tail = [c for c in classes if c in tail]
    if not head:
        raise ConfigError(
            f"no head class: no class reaches long_tail.head_min_prevalence={cfg.head_min_prevalence} in the "
            f"training split of {source} (prevalences: {_fmt(prevalence)}); lower it or list long_tail.head_classes."
        )
    if not tail:
        raise ConfigError(
            f"no tail class: no class is at or below long_tail.tail_max_prevalence={cfg.tail_max_prevalence} in "
            f"the training split of {source} (prevalences: {_fmt(prevalence)}); raise it or list long_tail.tail_classes."
        )
    empty = [c for c in tail if counts[c] == 0]
    if empty:
        raise InputError(
            f"tail class(es) {', '.join(map(repr, empty))} have no positive sample in the training split of "
            f"{source}, so there is nothing to augment them from; remove them from long_tail.tail_classes "
            f"(or the class from data.classes), or add training images that show them."
        )
    medium = [c for c in classes if c not in head and c not in tail]
    n = {s: int((manifest["split"] == s).sum()) for s in SPLITS}
    return ClassSplit(classes, head, tail, medium, counts, prevalence, n)


def _fmt(prevalence: dict[str, float]) -> str:
    return ", ".join(f"{c} {p:.3f}" for c, p in prevalence.items())


# ---------------------------------------------------------------------------- stages


def load_labels(cfg: DataConfig, threads: int = 1) -> pd.DataFrame:
    """Read and check every split; return the manifest frame (with a ``_line`` column). Writes nothing."""
    for split in SPLITS:
        if not os.path.isfile(cfg.labels[split]):
            raise InputError(
                f"{cfg.labels[split]}: labels CSV of the {split} split (data.labels.{split}) does not exist; "
                f"point data.labels.{split} at the CXR-LT labels file of that split."
            )
    headers = {s: read_header(Path(cfg.labels[s])) for s in SPLITS}
    classes = resolve_classes(cfg, headers)
    frame = pd.concat([read_split(cfg, s, classes) for s in SPLITS], ignore_index=True)
    check_unique_ids(frame, cfg)
    check_images(frame, cfg, threads)
    return frame


def prepare_data(cfg: DataConfig, manifest: str | Path, threads: int = 1) -> pd.DataFrame:
    """Stage prepare_data: validate the labels files and images, then write manifest.csv atomically."""
    frame = load_labels(cfg, threads).drop(columns="_line")
    with atomic_path(manifest) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def read_manifest(path: str | Path) -> pd.DataFrame:
    """manifest.csv as written by :func:`prepare_data` (labels as uint8)."""
    frame = pd.read_csv(path, dtype={"id": str, "path": str, "split": str})
    classes = frame.columns[frame.columns.get_loc("split") + 1 :]
    return frame.astype({c: np.uint8 for c in classes})


def write_classes(cfg: LongTailConfig, manifest: str | Path, classes_json: str | Path) -> ClassSplit:
    """Stage split_classes: head/tail/medium classes from the manifest's training split -> classes.json."""
    split = split_classes(cfg, read_manifest(manifest), source=str(manifest))
    with atomic_path(classes_json) as tmp:
        Path(tmp).write_text(json.dumps(asdict(split), indent=2) + "\n")
    return split


def read_classes(path: str | Path) -> ClassSplit:
    """classes.json as written by :func:`write_classes`."""
    return ClassSplit(**json.loads(Path(path).read_text()))
