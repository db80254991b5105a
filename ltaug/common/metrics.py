"""Multi-label classification metrics shared by iterated learning (validation) and evaluation (Table 1).

Elberg, Parra, Petrache (arXiv 2405.01705), Sec. 4 / Table 1 report mean average precision
over head classes and over tail classes. Average precision and AUROC come from
scikit-learn; this module only decides which classes count: a class without a positive
(or, for AUROC, without a negative) in the evaluated split has no defined score and is
left out of the means, and the caller is told which ones were left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def per_class_ap(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """{class: average precision} for (N, K) 0/1 labels and (N, K) scores; NaN where a class has no positive."""
    labels, scores = _check(labels, scores, classes)
    out = {}
    for k, name in enumerate(classes):
        y = labels[:, k]
        out[name] = float(average_precision_score(y, scores[:, k])) if y.any() else math.nan
    return out


def per_class_auroc(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """{class: ROC AUC}; NaN where a class has no positive or no negative."""
    labels, scores = _check(labels, scores, classes)
    out = {}
    for k, name in enumerate(classes):
        y = labels[:, k]
        out[name] = float(roc_auc_score(y, scores[:, k])) if 0 < y.sum() < len(y) else math.nan
    return out


def mean_over(values: dict[str, float], names: Sequence[str]) -> float:
    """Mean of ``values`` over ``names``, skipping NaN (undefined) entries; NaN if none is defined."""
    defined = [values[n] for n in names if not math.isnan(values[n])]
    return float(np.mean(defined)) if defined else math.nan


def group_map(
    labels: np.ndarray, scores: np.ndarray, classes: Sequence[str], head: Sequence[str], tail: Sequence[str]
) -> dict[str, float]:
    """{"map_head", "map_tail", "map_all"}: mean AP over head, tail and all classes (undefined APs skipped)."""
    ap = per_class_ap(labels, scores, classes)
    return {"map_head": mean_over(ap, head), "map_tail": mean_over(ap, tail), "map_all": mean_over(ap, classes)}


def _check(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape or labels.shape[1] != len(classes):
        raise ValueError(
            f"labels {labels.shape} and scores {scores.shape} must both be (N, {len(classes)}), one column per class"
        )
    return labels.astype(np.uint8), scores


SUMMARY = ("map_head", "map_tail", "map_all", "auroc_macro")


def score_metrics(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str], head: Sequence[str], tail: Sequence[str]) -> dict:
    """Per-class AP and AUROC, head/tail/all mAP and macro AUROC of (N, K) labels and scores."""
    ap = per_class_ap(labels, scores, classes)
    auroc = per_class_auroc(labels, scores, classes)
    return {
        "ap": ap,
        "auroc": auroc,
        "map_head": mean_over(ap, head),
        "map_tail": mean_over(ap, tail),
        "map_all": mean_over(ap, classes),
        "auroc_macro": mean_over(auroc, classes),
    }


def best_thresholds(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Per class, the score threshold that maximises F1 on (labels, scores) (0.5 for a class without positives).

    Used on the validation split, so that "the real-data classifier scores a sample positive
    for class t" has a meaning for rare classes, whose scores rarely reach 0.5.
    """
    from sklearn.metrics import precision_recall_curve

    out = {}
    for k, name in enumerate(classes):
        y = labels[:, k]
        if not y.any():
            out[name] = 0.5
            continue
        precision, recall, thresholds = precision_recall_curve(y, scores[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        out[name] = float(thresholds[int(np.argmax(f1))])
    return out


def mean_std(runs: list[dict]) -> tuple[dict, dict]:
    """Mean and sample standard deviation (0 for one run) of the summary numbers and per-class APs over runs."""
    def stats(values: list[float]) -> tuple[float, float]:
        defined = [v for v in values if not math.isnan(v)]
        if not defined:
            return math.nan, math.nan
        return float(np.mean(defined)), float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0

    mean, std = {}, {}
    for key in SUMMARY:
        mean[key], std[key] = stats([r[key] for r in runs])
    for group in ("ap", "auroc"):
        mean[group], std[group] = {}, {}
        for name in runs[0][group]:
            mean[group][name], std[group][name] = stats([r[group][name] for r in runs])
    return mean, std
