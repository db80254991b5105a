"""Labels files as the public chest X-ray data sets ship them: formats, splits, patients, file names.

:func:`ltaug.data.manifest.load_labels` reads every data set through this module, always by column name:

``data.labels_format``
    ``columns``    one column per class (CXR-LT / MIMIC-CXR-LT: 0/1; CheXpert: 1.0, 0.0, -1.0 for
                   uncertain and blank for not mentioned, mapped by ``data.uncertain`` and ``data.blank``)
    ``delimited``  one column (``data.labels_column``) of class names joined by ``data.labels_delimiter``
                   (NIH ChestX-ray14: ``Finding Labels`` = "Cardiomegaly|Effusion", or "No Finding")
    ``list``       one column holding a list literal of names (PadChest: ``Labels`` =
                   "['pleural effusion', 'cardiomegaly']"), parsed with ast.literal_eval, never eval

Splits: one labels file per split (``data.labels: {train, val, test}``), or one file for every
image (``data.labels: {all: ...}``) with ``data.split_lists`` (a text file of ids or file names per
split, as NIH ships train_val_list.txt and test_list.txt); a split that no file gives is carved from
train (``data.carve: {val: 0.1}``), seeded (``data.split_seed``) and by patient
(``data.patient_column``), so no patient is in two splits. A patient found in two given splits is an
error naming the patient and the files, unless ``data.allow_patient_overlap``.

Images: the path column is relative to ``data.image_root``, or with ``data.locate_images`` a bare
file name found anywhere under it (NIH's images_001/images/ ... images_012/images/), through one
index of the tree built once.
"""

from __future__ import annotations

import ast
import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ltaug.common.errors import ConfigError, InputError

SPLITS = ("train", "val", "test")
MAX_LISTED = 5
POSITIVE, NEGATIVE, UNCERTAIN_VALUES = {"1", "1.0"}, {"0", "0.0"}, {"-1", "-1.0"}


def _lines(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(i) + 2) for i in rows[:MAX_LISTED])  # + header line, 1-based
    return shown + (f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else "")


def read_header(path: str | Path) -> list[str]:
    """The CSV's column names, with duplicates reported (pandas would silently rename them)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise InputError(f"{path}: the file is empty; expected a header line with the id, path and class columns.")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise InputError(f"{path}: column(s) {', '.join(map(repr, dupes))} appear more than once in the header.")
    return header


def read_table(path: str) -> pd.DataFrame:
    """A labels CSV as strings, blanks kept as "" (a BOM, as spreadsheet exports write it, is dropped)."""
    read_header(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    if len(frame) == 0:
        raise InputError(f"{path}: the file has a header but no rows; every split needs images.")
    return frame.assign(_line=np.arange(len(frame)) + 2, _source=path)


def read_list(path: str, split: str) -> list[str]:
    """The ids or file names of one split list (one a line, blank lines skipped)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: split list of {split} (data.split_lists.{split}) does not exist.")
    return [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def assign_lists(table: pd.DataFrame, lists: dict[str, str], id_column: str, path_column: str) -> pd.DataFrame:
    """The ``split`` of every row of one table from the split lists, matched by id or by file name."""
    split = pd.Series("", index=table.index)
    keys = {"id": table[id_column], "name": table[path_column].map(os.path.basename)}
    for name, path in lists.items():
        wanted = set(read_list(path, name))
        hit = keys["id"].isin(wanted) | keys["name"].isin(wanted)
        twice = hit & (split != "")
        if twice.any():
            rows = np.flatnonzero(twice)
            raise InputError(
                f"{table['_source'].iloc[0]}: {len(rows)} row(s) are in split list {path} ({name}) and in "
                f"{split[twice].iloc[0]}'s, lines {_lines(rows)}; every image belongs to one split."
            )
        found = set(keys["id"][hit]) | set(keys["name"][hit])
        unknown = sorted(wanted - found)
        if unknown:
            raise InputError(
                f"{path}: {len(unknown)} name(s) of split {name} are not in {table['_source'].iloc[0]} "
                f"(neither {id_column!r} nor the file name of {path_column!r}): {', '.join(unknown[:MAX_LISTED])}."
            )
        split[hit] = name
    missing = np.flatnonzero(split.to_numpy() == "")
    if len(missing):
        raise InputError(
            f"{table['_source'].iloc[0]}: {len(missing)} row(s) are in no split list of data.split_lists "
            f"({', '.join(lists)}), lines {_lines(missing)}; add them to a list, or remove them from the labels file."
        )
    return table.assign(split=split.to_numpy())


def carve(train: pd.DataFrame, fractions: dict[str, float], patient_column: str, seed: int) -> pd.DataFrame:
    """Move a seeded share of the training patients (or images, without a patient column) to each split of
    ``fractions``; every image of a patient goes with the patient."""
    groups = train[patient_column] if patient_column else train["_line"].astype(str)
    patients = np.array(sorted(set(groups)))
    rng = np.random.default_rng(seed)
    order = patients[rng.permutation(len(patients))]
    start, out = 0, train.copy()
    for name, share in fractions.items():
        count = int(round(share * len(patients)))
        if count < 1 or start + count >= len(patients):
            raise ConfigError(
                f"data.carve.{name}: {share} of {len(patients)} training {'patients' if patient_column else 'images'} "
                f"is {count}; choose a share that leaves at least one for this split and one for train."
            )
        out.loc[groups.isin(set(order[start : start + count])).to_numpy(), "split"] = name
        start += count
    return out


def patients_from_paths(table: pd.DataFrame, path_column: str, pattern: str) -> np.ndarray:
    """The patient id of every row: the one group of ``pattern`` (data.patient_regex) found in its path."""
    import re

    regex = re.compile(pattern)
    found = [regex.search(p) for p in table[path_column]]
    bad = np.flatnonzero([m is None for m in found])
    if len(bad):
        raise InputError(
            f"{table['_source'].iloc[bad[0]]}: data.patient_regex '{pattern}' finds no patient id in column "
            f"{path_column!r} on {len(bad)} row(s) (first: line {table['_line'].iloc[bad[0]]}, "
            f"{table[path_column].iloc[bad[0]]!r}); fix the pattern, or name a patient column in data.patient_column."
        )
    return np.array([m.group(1) for m in found])


def check_patients(frame: pd.DataFrame, patient_column: str, allow: bool) -> None:
    """No patient in two splits (the classic silent leak of these data sets) unless ``allow``."""
    if not patient_column or allow:
        return
    splits = frame.groupby(patient_column)["split"].nunique()
    leaked = splits[splits > 1].index.tolist()
    if leaked:
        shown = []
        for patient in leaked[:MAX_LISTED]:
            rows = frame[frame[patient_column] == patient]
            where = sorted({f"{s} ({src})" for s, src in zip(rows["split"], rows["_source"])})
            shown.append(f"{patient!r} in {', '.join(where)}")
        raise InputError(
            f"{len(leaked)} patient(s) of column {patient_column!r} (data.patient_column) are in more than one split: "
            f"{'; '.join(shown)}. Images of one patient in train and test leak the test set; fix the splits, or set "
            f"data.allow_patient_overlap: true to accept it knowingly."
        )


# ---------------------------------------------------------------------------- label formats


def names_of(table: pd.DataFrame, fmt: str, column: str, delimiter: str, blank: str) -> list[list[str]]:
    """The class names of every row of a delimited or list labels column."""
    if column not in table.columns:
        raise InputError(
            f"{table['_source'].iloc[0]}: no column {column!r} (data.labels_column); the columns are: "
            f"{', '.join(c for c in table.columns if not c.startswith('_'))}."
        )
    out, bad, empty = [], [], []
    for i, cell in enumerate(table[column]):
        if cell.strip() == "":
            empty.append(i)
            out.append([])
            continue
        if fmt == "delimited":
            out.append([n.strip() for n in cell.split(delimiter) if n.strip()])
            continue
        try:
            value = ast.literal_eval(cell.strip())
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            bad.append(i)
            out.append([])
        else:
            out.append([v.strip() for v in value if v.strip()])
    src = table["_source"].iloc[0]
    if bad:
        raise InputError(
            f"{src}: column {column!r} is not a list of names such as \"['pleural effusion', 'cardiomegaly']\" on "
            f"{len(bad)} row(s), lines {_lines(np.array(bad))} (first: {table[column].iloc[bad[0]]!r})."
        )
    if empty and blank == "error":
        raise InputError(
            f"{src}: column {column!r} is blank on {len(empty)} row(s), lines {_lines(np.array(empty))}; set "
            f"data.blank: zeros to read a blank as no finding, or fill the rows."
        )
    return out


def name_matrix(tables: list[pd.DataFrame], names: list[list[list[str]]], classes: list[str], ignore: list[str],
                column: str) -> tuple[list[str], list[np.ndarray]]:  # fmt: skip
    """(classes, one (N, K) uint8 matrix per table) from rows of names: the configured classes, or every name
    that occurs (first seen first); a name that is neither a class nor in ``ignore`` is an error naming rows."""
    if not classes:
        seen: dict[str, None] = {}
        for rows in names:
            for row in rows:
                seen.update(dict.fromkeys(n for n in row if n not in ignore))
        classes = list(seen)
    index = {c: k for k, c in enumerate(classes)}
    out = []
    for table, rows in zip(tables, names):
        matrix = np.zeros((len(rows), len(classes)), dtype=np.uint8)
        unknown: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            for n in row:
                if n in index:
                    matrix[i, index[n]] = 1
                elif n not in ignore:
                    unknown.setdefault(n, []).append(i)
        if unknown:
            shown = "; ".join(f"{n!r} on line(s) {_lines(np.array(r))}" for n, r in list(unknown.items())[:MAX_LISTED])
            raise InputError(
                f"{table['_source'].iloc[0]}: column {column!r} names {len(unknown)} finding(s) that are not classes "
                f"(data.classes): {shown}. Add them to data.classes, or to data.ignore_labels to drop them knowingly."
            )
        out.append(matrix)
    return classes, out


def column_matrix(table: pd.DataFrame, classes: list[str], uncertain: str, blank: str) -> np.ndarray:
    """(N, K) uint8 from one 0/1 column per class; -1 (uncertain) and blank by their policies."""
    values = table[classes]
    stripped = values.apply(lambda c: c.str.strip())
    known = POSITIVE | NEGATIVE
    if uncertain != "error":
        known |= UNCERTAIN_VALUES
    ok = stripped.isin(known) | ((stripped == "") & (blank != "error"))
    if not ok.to_numpy().all():
        problems = []
        for c in classes:
            bad = np.flatnonzero(~ok[c].to_numpy())
            if len(bad):
                cells = [values[c].iloc[i] for i in bad[:MAX_LISTED]]
                shown = ", ".join(f"line {int(i) + 2} ({v!r})" if v.strip() else f"line {int(i) + 2} (blank)"
                                  for i, v in zip(bad, cells))  # fmt: skip
                more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
                note = " (no row is 0 or 1: if this is not a class, add it to data.metadata_columns)" if len(bad) == len(table) else ""
                problems.append(f"column {c!r}: {len(bad)} row(s): {shown}{more}{note}")
        raise InputError(
            f"{table['_source'].iloc[0]}: label values must be 0 or 1, but\n  " + "\n  ".join(problems) + "\n"
            "Uncertain (-1) labels are read with data.uncertain: zeros or ones (CheXpert's U-Zeros / U-Ones) and "
            "blank ones with data.blank: zeros; or add a non-class column to data.metadata_columns."
        )
    matrix = stripped.isin(POSITIVE).to_numpy()
    if uncertain == "ones":
        matrix |= stripped.isin(UNCERTAIN_VALUES).to_numpy()
    return matrix.astype(np.uint8)


# ---------------------------------------------------------------------------- image files


def locate(names: pd.Series, root: str, sources: pd.DataFrame) -> list[str]:
    """Paths of bare file names found anywhere under ``root`` (one index of the tree, built once)."""
    index: dict[str, list[str]] = {}
    for folder, _, files in os.walk(root):
        for f in files:
            index.setdefault(f, []).append(os.path.join(folder, f))
    base = names.map(os.path.basename)
    twice = sorted({n for n in base if len(index.get(n, [])) > 1})
    if twice:
        shown = "; ".join(f"{n}: {', '.join(index[n][:3])}" for n in twice[:MAX_LISTED])
        raise InputError(
            f"{len(twice)} image file name(s) occur more than once under data.image_root={root!r} "
            f"(data.locate_images finds images by name): {shown}. Remove the copies, or give paths relative to "
            f"data.image_root in the path column and set data.locate_images: false."
        )
    missing = np.flatnonzero(~base.isin(index).to_numpy())
    if len(missing):
        shown = ", ".join(f"{base.iloc[i]} ({sources['_source'].iloc[i]} line {sources['_line'].iloc[i]})"
                          for i in missing[:MAX_LISTED])  # fmt: skip
        raise InputError(
            f"{len(missing)} of {len(names)} images are nowhere under data.image_root={root!r} "
            f"(data.locate_images); the first: {shown}. Check data.image_root, or remove the rows of images you do not have."
        )
    return [index[n][0] for n in base]
