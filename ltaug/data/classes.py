"""Stage split_classes: the classes of the manifest split into head, medium and tail (config section long_tail), from
explicit lists or from training prevalence thresholds, as the paper's long-tail setting requires (Elberg et al.,
arXiv 2405.01705, Sec. 4); classes.json and its reader, which every later stage uses."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from ltaug.common.config import config_section
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.io import atomic_path
from ltaug.data.labels import SPLITS
from ltaug.data.manifest import class_columns, read_manifest


@config_section("long_tail")
@dataclass(frozen=True)
class LongTailConfig:
    head_classes: list[str] = field(default_factory=list)  # empty: prevalence >= head_min_prevalence
    tail_classes: list[str] = field(default_factory=list)  # empty: prevalence <= tail_max_prevalence
    head_min_prevalence: float = 0.15  # training prevalence threshold for head classes
    tail_max_prevalence: float = 0.02  # training prevalence threshold for tail classes

    def __post_init__(self):  # types and ranges: the schema (ltaug.common.config.config_section)
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
    labels: dict = field(default_factory=dict)  # how the labels were read: format, uncertain and blank policies


def split_classes(cfg: LongTailConfig, manifest: pd.DataFrame, source: str = "the manifest") -> ClassSplit:
    """Head and tail classes from explicit lists or training prevalence, checked against the data.

    ``manifest`` is the frame :func:`prepare_data` writes; its class columns follow ``split``. Prevalences are those
    of the training images as the data set ships them: split train and the oracle's held-out share (split holdout,
    :mod:`ltaug.data.holdout`), which was chosen with the same classes; the counts are split train's, the images
    every stage trains on.
    """
    classes = class_columns(manifest)
    shipped = manifest[manifest["split"].isin(["train", "holdout"])]
    train = manifest[manifest["split"] == "train"]
    counts = {c: int(train[c].sum()) for c in classes}
    prevalence = {c: int(shipped[c].sum()) / len(shipped) for c in classes}
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
    n = {s: int((manifest["split"] == s).sum()) for s in (*SPLITS, "holdout") if s != "holdout" or (manifest["split"] == s).any()}
    return ClassSplit(classes, head, tail, medium, counts, prevalence, n)


def _fmt(prevalence: dict[str, float]) -> str:
    return ", ".join(f"{c} {p:.3f}" for c, p in prevalence.items())


def write_classes(
    cfg: LongTailConfig, manifest: str | Path, classes_json: str | Path, labels: dict | None = None
) -> ClassSplit:
    """Stage split_classes: head/tail/medium classes from the manifest's training split -> classes.json,
    with ``labels``: how prepare_data read them (data.labels_format, uncertain, blank, ignore_labels)."""
    split = split_classes(cfg, read_manifest(manifest), source=str(manifest))
    split = ClassSplit(**{**asdict(split), "labels": dict(labels or {})})
    with atomic_path(classes_json) as tmp:
        Path(tmp).write_text(json.dumps(asdict(split), indent=2) + "\n")
    return split


def check_class_names(keys: dict[str, str], split: ClassSplit, out: str | Path | None = None, source: str = "") -> None:
    """ConfigError unless every config key of ``keys`` ({"fusion.exclusive_class": "No Finding", ...}) names a class
    of ``split`` ("" names none and passes); written to ``out`` as checked (rule check_class_names, so that a key
    copied from another data set fails as soon as the classes are split, not at the stage that reads it)."""
    wrong = {key: name for key, name in keys.items() if name and name not in split.classes}
    if wrong:
        raise ConfigError("\n".join(
            f"{key}: {name!r} is not a class of {source or 'classes.json'} ({', '.join(split.classes)}); name one of "
            f"them, or set it to \"\" if the data has no such class." for key, name in wrong.items()
        ))  # fmt: skip
    if out is not None:
        with atomic_path(out) as tmp:
            Path(tmp).write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")


def read_classes(path: str | Path) -> ClassSplit:
    """classes.json as written by :func:`write_classes`."""
    return ClassSplit(**json.loads(Path(path).read_text()))
