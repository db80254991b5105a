"""Data ingestion: labels CSVs in the CXR-LT layout -> one validated manifest and the class split.

Reads one labels CSV per split (MIMIC-CXR-LT / CXR-LT 2023 style: id and metadata
columns, a path column relative to an image root, one 0/1 column per class), always
by column name, never by position. Classes are split into head and tail either from
explicit lists or from training prevalence thresholds, as the paper's long-tail
setting requires (Elberg et al., arXiv 2405.01705, Sec. 4).

Two stages (split_classes is :mod:`ltaug.data.classes`), so that changing a head/tail threshold reruns only what depends on
the class split, never the encoding of every image:
  prepare_data   labels CSVs + images -> manifest.csv: id, path, split, one 0/1 column per
                 class (splits in train/val/test order); written only once every check passed
  split_classes  manifest.csv -> classes.json: class order, head, tail, medium, training
                 counts and prevalences
Both write atomically: a failed run leaves no output behind.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ltaug.common.config import config_section
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.images import check_image
from ltaug.common.io import atomic_path
from ltaug.data import labels
from ltaug.data.labels import MAX_LISTED, SPLITS  # the splits, and how many offending rows an error lists


@config_section("data")
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
    classes: list[str] = field(default_factory=list)  # class columns (or names); empty: all non-metadata columns
    check_images: str = "header"  # exists | header | full (see ltaug.common.images.CHECKS)
    labels_format: str = "columns"  # columns | delimited (NIH) | list (PadChest), see ltaug.data.labels
    labels_column: str = ""  # delimited / list: the column of class names
    labels_delimiter: str = "|"  # delimited: between names
    ignore_labels: list[str] = field(default_factory=list)  # names in the labels column that are no class
    uncertain: str = "error"  # columns: -1 is an error | zeros | ones (CheXpert's U-Zeros / U-Ones)
    blank: str = "error"  # a blank label is an error | zeros (not mentioned = negative)
    split_lists: dict[str, str] = field(default_factory=dict)  # split -> text file of ids or file names (with labels.all)
    carve: dict[str, float] = field(default_factory=dict)  # split -> share of the training patients moved to it
    split_seed: int = 0  # seed of the carving
    patient_column: str = ""  # patient id column: carving by patient, no patient in two splits
    patient_regex: str = ""  # or the patient id from the path column: a regex with one group (CheXpert: patient(\d+))
    allow_patient_overlap: bool = False  # accept a patient in two given splits
    locate_images: bool = False  # the path column holds file names, found anywhere under image_root
    window: list[float] | None = None  # [lo, hi] stored values -> 0..255 for > 8-bit images; None: each image's range

    def __post_init__(self):  # types and ranges: the schema (ltaug.common.config.config_section)
        from ltaug.common.images import check_window

        check_window(self.window)

        given = set(self.labels)
        if "all" in given and given != {"all"}:
            raise ConfigError(
                f"data.labels: 'all' (one file for every image) and per-split files ({', '.join(sorted(given - {'all'}))}) "
                f"both given; use one of them."
            )
        if "all" not in given and "train" not in given:
            raise ConfigError("data.labels: no training labels; give data.labels.train (or data.labels.all).")
        if self.split_lists and "all" not in given:
            raise ConfigError("data.split_lists: split lists divide one labels file; give it as data.labels.all.")
        have = (set(self.split_lists) or {"train"}) if "all" in given else given  # splits the files give
        both = sorted(have & set(self.carve))
        if both:
            raise ConfigError(f"data.carve: {', '.join(both)} is given by a labels file or list already; remove it from data.carve.")
        missing = [s for s in SPLITS if s not in have | set(self.carve)]
        if missing:
            raise ConfigError(
                f"data.labels: no {', '.join(missing)} split; give data.labels.{missing[0]}, a "
                f"data.split_lists.{missing[0]} (with data.labels.all), or carve it from train, e.g. "
                f"data.carve: {{{missing[0]}: 0.1}}."
            )
        if self.patient_column and self.patient_regex:
            raise ConfigError("data.patient_column and data.patient_regex both given; the patient id comes from one of them.")
        if self.patient_regex:
            import re

            try:
                groups = re.compile(self.patient_regex).groups
            except re.error as exc:
                raise ConfigError(f"data.patient_regex: {self.patient_regex!r} is not a regular expression ({exc}).")
            if groups != 1:
                raise ConfigError(
                    f"data.patient_regex: '{self.patient_regex}' has {groups} groups; it needs exactly one, the patient id "
                    f"(CheXpert: 'patient(\\d+)')."
                )
        if self.labels_format != "columns" and not self.labels_column:
            raise ConfigError(
                f"data.labels_column: labels_format {self.labels_format} reads the class names from one column; "
                f"name it (NIH ChestX-ray14: 'Finding Labels', PadChest: 'Labels')."
            )


# ---------------------------------------------------------------------------- reading


def split_tables(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """Every split's rows as strings (``_source``, ``_line``: where each came from), from per-split files, one
    file and split lists, and carving from train (:mod:`ltaug.data.labels`)."""
    for key, path in cfg.labels.items():
        if not os.path.isfile(path):
            raise InputError(
                f"{path}: labels CSV of the {key} split (data.labels.{key}) does not exist; "
                f"point data.labels.{key} at the labels file of that split."
            )
    files = {key: labels.read_table(path) for key, path in cfg.labels.items()}
    for table in files.values():
        for col, key in ((cfg.id_column, "data.id_column"), (cfg.path_column, "data.path_column"),
                         (cfg.patient_column, "data.patient_column")):  # fmt: skip
            if col:
                _require(table, col, key)
    if "all" in files:
        table = files["all"]
        if cfg.split_lists:
            table = labels.assign_lists(table, cfg.split_lists, cfg.id_column, cfg.path_column)
        else:
            table = table.assign(split="train")
    else:
        table = pd.concat([files[s].assign(split=s) for s in SPLITS if s in files], ignore_index=True)
    patient = cfg.patient_column
    if cfg.patient_regex:
        patient, table = "_patient", table.assign(_patient=labels.patients_from_paths(table, cfg.path_column, cfg.patient_regex))
    labels.check_patients(table, patient, cfg.allow_patient_overlap)
    if cfg.carve:
        train = labels.carve(table[table["split"] == "train"], cfg.carve, patient, cfg.split_seed)
        table = pd.concat([train, table[table["split"] != "train"]])
    return {s: table[table["split"] == s].reset_index(drop=True) for s in SPLITS}


def _require(table: pd.DataFrame, column: str, key: str) -> None:
    if column not in table.columns:
        columns = ", ".join(c for c in table.columns if not c.startswith("_") and c != "split")
        raise InputError(
            f"{table['_source'].iloc[0]}: no column {column!r} ({key}); the columns are: {columns}. "
            f"Set {key} to the name of the column that holds it."
        )


def resolve_classes(cfg: DataConfig, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The class columns (format ``columns``): the configured list, or every non-id/path/metadata column of train."""
    reserved = {cfg.id_column, cfg.path_column, cfg.patient_column, *cfg.metadata_columns, "split", "_line", "_source",
                "_patient"}  # fmt: skip
    sources = {}  # each labels file once, with its columns
    for table in tables.values():
        for src, part in table.groupby("_source", sort=False):
            sources[src] = [c for c in part.columns if not part[c].isna().all()]
    if cfg.classes:
        classes = list(cfg.classes)
        for src, header in sources.items():
            absent = [c for c in classes if c not in header]
            if absent:
                raise InputError(
                    f"{src}: class(es) {', '.join(map(repr, absent))} from data.classes are not columns of this "
                    f"file; its columns are: {', '.join(c for c in header if not c.startswith('_') and c != 'split')}. "
                    f"Fix the spelling in data.classes or remove them."
                )
        return classes
    train_source = tables["train"]["_source"].iloc[0]
    classes = [c for c in sources[train_source] if c not in reserved]
    if not classes:
        raise InputError(f"{train_source}: no class columns left after the id, path and metadata columns.")
    for src, header in sources.items():
        absent = [c for c in classes if c not in header]
        extra = [c for c in header if c not in reserved and c not in classes]
        if absent or extra:
            parts = []
            if absent:
                parts.append(f"lacks class column(s) {', '.join(map(repr, absent))} of {train_source}")
            if extra:
                parts.append(f"has column(s) {', '.join(map(repr, extra))} that the training file lacks")
            raise InputError(
                f"{src}: {' and '.join(parts)}. All splits need the same class columns: "
                f"list the classes in data.classes, or add non-class columns to data.metadata_columns."
            )
    return classes


def label_matrices(cfg: DataConfig, tables: dict[str, pd.DataFrame]) -> tuple[list[str], dict[str, np.ndarray]]:
    """(classes, (N, K) uint8 labels per split) in ``cfg.labels_format``, each labels file read on its own (its
    errors name it); the rows of a split are numbered 0..N-1 (split_tables), so a file's rows index its matrix."""
    parts = [part for s in SPLITS for _, part in tables[s].groupby("_source", sort=False)]
    if cfg.labels_format == "columns":
        classes = resolve_classes(cfg, tables)
        matrices = [labels.column_matrix(part, classes, cfg.uncertain, cfg.blank) for part in parts]
    else:
        names = [labels.names_of(part, cfg.labels_format, cfg.labels_column, cfg.labels_delimiter, cfg.blank)
                 for part in parts]  # fmt: skip
        classes, matrices = labels.name_matrix(parts, names, list(cfg.classes), list(cfg.ignore_labels), cfg.labels_column)
    out = {s: np.zeros((len(tables[s]), len(classes)), dtype=np.uint8) for s in SPLITS}
    for part, matrix in zip(parts, matrices):
        out[part["split"].iloc[0]][part.index.to_numpy()] = matrix
    return classes, out


def manifest_frame(cfg: DataConfig, split: str, table: pd.DataFrame, classes: list[str], y: np.ndarray) -> pd.DataFrame:
    """One split as a manifest frame: id, path (under image_root), split, uint8 labels (+ where each row came from)."""
    for col, key in ((cfg.id_column, "data.id_column"), (cfg.path_column, "data.path_column")):
        blank = np.flatnonzero(table[col].str.strip().to_numpy() == "")
        if len(blank):
            lines = ", ".join(str(table["_line"].iloc[i]) for i in blank[:MAX_LISTED])
            raise InputError(f"{table['_source'].iloc[blank[0]]}: column {col!r} ({key}) is blank on {len(blank)} row(s), lines {lines}.")
    if cfg.locate_images:  # file names: load_labels finds them, all splits through one index
        paths = table[cfg.path_column].tolist()
    else:
        paths = [os.path.join(cfg.image_root, p) for p in table[cfg.path_column]]
    out = pd.DataFrame({"id": table[cfg.id_column].to_numpy(), "path": paths, "split": split})
    extra = {"_line": table["_line"].to_numpy(), "_source": table["_source"].to_numpy()}
    if cfg.patient_column:  # whole patients are held out for the oracle (ltaug.data.holdout)
        extra["_patient"] = table[cfg.patient_column].to_numpy()
    return pd.concat([out, pd.DataFrame(y, columns=classes), pd.DataFrame(extra)], axis=1)


# ---------------------------------------------------------------------------- checks


def check_unique_ids(frame: pd.DataFrame, cfg: DataConfig) -> None:
    dup = frame[frame["id"].duplicated(keep=False)]
    if len(dup):
        groups = dup.groupby("id", sort=False)
        shown = "; ".join(
            f"{i!r} at " + ", ".join(f"{src} line {n}" for src, n in zip(g["_source"], g["_line"]))
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
            f"{p} ({src} line {n})"
            for p, src, n in zip(missing["path"][:MAX_LISTED], missing["_source"], missing["_line"])
        )
        raise InputError(
            f"{len(missing)} of {len(frame)} images listed in the labels files do not exist under "
            f"data.image_root={cfg.image_root!r}; the first {min(len(missing), MAX_LISTED)}:\n  {shown}\n"
            "Check data.image_root and data.path_column, or remove the rows of images you do not have."
        )
    if cfg.check_images == "exists":
        return
    where = [f"{src} line {n}" for src, n in zip(frame["_source"], frame["_line"])]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        # list() re-raises the first failure in manifest order
        list(pool.map(check_image, frame["path"], [cfg.check_images] * len(frame), where))


# ---------------------------------------------------------------------------- stages


def load_labels(cfg: DataConfig, threads: int = 1) -> pd.DataFrame:
    """Read and check every split; return the manifest frame (with ``_line``, ``_source`` columns). Writes nothing."""
    tables = split_tables(cfg)
    classes, matrices = label_matrices(cfg, tables)
    frame = pd.concat([manifest_frame(cfg, s, tables[s], classes, matrices[s]) for s in SPLITS], ignore_index=True)
    if cfg.locate_images:
        frame["path"] = labels.locate(frame["path"], cfg.image_root, frame)
    check_unique_ids(frame, cfg)
    check_images(frame, cfg, threads)
    return frame


def prepare_data(cfg: DataConfig, manifest: str | Path, threads: int = 1, hold_out=None) -> pd.DataFrame:
    """Stage prepare_data: validate the labels files and images, then write manifest.csv atomically. ``hold_out``:
    a function of the checked frame that moves the oracle's held-out share to split holdout
    (:func:`ltaug.data.holdout.hold_out`), or None."""
    frame = load_labels(cfg, threads)
    if hold_out is not None:
        frame = hold_out(frame)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
    with atomic_path(manifest) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def read_manifest(path: str | Path) -> pd.DataFrame:
    """manifest.csv as written by :func:`prepare_data` (labels as uint8)."""
    frame = pd.read_csv(path, dtype={"id": str, "path": str, "split": str})
    return frame.astype({c: np.uint8 for c in class_columns(frame)})


def class_columns(manifest: pd.DataFrame) -> list[str]:
    """The class columns of a manifest (the frame :func:`prepare_data` writes): every column after ``split``."""
    return list(manifest.columns[manifest.columns.get_loc("split") + 1 :])
