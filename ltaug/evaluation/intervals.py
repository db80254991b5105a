"""Bootstrap intervals and paired differences of Table 1's classification metrics.

Every method's classifier is scored on the same test images, so methods are compared on
the same bootstrap resamples of those images: replicate b draws N test images with
replacement (multinomial counts ``w_b``, one row of an (B, N) array, seeded once for all
methods), and every metric of every method is recomputed with those counts as sample
weights. A paired difference (method - Baseline) is then a difference per replicate, and
its 95 % interval and two-sided p-value come from those B differences.

Seeds: with S classifier seeds per method, replicate b also draws S seeds with replacement
(the same draw for every method; seed s of a method is paired with seed s of Baseline), and
its value is the mean over the drawn seeds of the metric on the resampled test set. The
interval thus holds both the test-set variance and the seed-to-seed variance of the mean of
S trainings (a two-level bootstrap); with one seed it is the test-set bootstrap alone. The
point estimate is the mean over seeds on the full test set.

Average precision and AUROC with integer sample weights equal scikit-learn's
``average_precision_score`` / ``roc_auc_score`` on the resampled (duplicated) rows; here
they are computed for a whole block of replicates at once from one sort per class:

    AP   = sum_g (TP_g - TP_{g-1}) / P * TP_g / (TP_g + FP_g)     (g: distinct scores, descending)
    AUC  = sum_g Wpos_g (Wneg_{<g} + Wneg_g / 2) / (Wpos Wneg)      (g: distinct scores, ascending)

with TP_g, FP_g the weighted counts of positives and negatives scoring >= the g-th score.
A class without a positive in a replicate has no AP there and is left out of that
replicate's group mean, as :mod:`ltaug.common.metrics` leaves it out of the point estimate.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ltaug.common.config import config_section
from ltaug.common.errors import InputError
from ltaug.common.seeds import rng as seeded
from ltaug.common.variants import parse_row, row_id
from ltaug.data.classes import ClassSplit

GROUPS = ("map_head", "map_tail", "map_all", "auroc_macro")


def resample_counts(n: int, resamples: int, seed: int, block: int = 100) -> Iterator[np.ndarray]:
    """Blocks of (<= block, n) int64 bootstrap counts (each row sums to n); the same for the same (n, seed)."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)


def _groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start index of every run of equal values in a sorted 1-d array."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def weighted_curves(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) average precision and (B,) ROC AUC (ties count one half) of 0/1 labels ``y`` (N,) and scores ``s`` (N,)
    under weights ``w`` (B, N), from one sort; AP is NaN where a row weighs no positive, AUC also where it weighs
    no negative.

    Only groups of tied scores that hold a positive add to either sum, so after one cumulative
    sum of all weights (int64: numpy sums it 20x faster than int32) every quantity is read at
    those groups' first and last positions: the cost beyond the sort is O(B N) with a small
    constant, and O(B P) for the P positives of a rare class.
    """
    order = np.argsort(-s, kind="stable")
    starts = _groups(s[order])
    group = np.zeros(len(s), dtype=np.int64)
    group[starts[1:]] = 1
    group = np.cumsum(group)  # group of every sorted position
    wo = np.asarray(w, dtype=np.int64)[:, order]
    pos = np.flatnonzero(np.asarray(y)[order].astype(bool))  # sorted positions of the positives
    b = len(wo)
    if len(pos) == 0:
        return np.full(b, np.nan), np.full(b, np.nan)
    zero = np.zeros((b, 1), dtype=np.int64)
    seen = np.concatenate([zero, np.cumsum(wo, axis=1)], axis=1)  # seen[:, i]: weight of the first i positions
    tp = np.concatenate([zero, np.cumsum(wo[:, pos], axis=1)], axis=1)  # tp[:, j]: weight of the first j positives
    ends = np.r_[starts[1:], len(s)]  # one past the last position of every group
    g, first = np.unique(group[pos], return_index=True)  # groups with a positive, index of their first positive
    last = np.r_[first[1:], len(pos)]  # one past their last positive
    gain = (tp[:, last] - tp[:, first]).astype(np.float64)  # positive weight of the group
    seen_end = seen[:, ends[g]].astype(np.float64)
    in_group = seen_end - seen[:, starts[g]]
    tp_end = tp[:, last].astype(np.float64)
    positives = tp[:, -1].astype(np.float64)
    negatives = (seen[:, -1] - tp[:, -1]).astype(np.float64)
    precision = np.divide(tp_end, seen_end, out=np.zeros(tp_end.shape), where=seen_end > 0)
    # AUC: a group's positives beat the negatives scoring lower and tie with the group's own negatives
    lower = negatives[:, None] - (seen_end - tp_end) + (in_group - gain) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(positives > 0, (gain * precision).sum(axis=1) / positives, np.nan)
        auc = np.where(positives * negatives > 0, (gain * lower).sum(axis=1) / (positives * negatives), np.nan)
    return ap, auc


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def replicate_metrics(
    labels: np.ndarray, scores: np.ndarray, w: np.ndarray, head: Sequence[int], tail: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-class AP and AUROC (B, K) and the group means (B,) of one seed's (N, K) scores under (B, N) weights."""
    curves = [weighted_curves(labels[:, c], scores[:, c], w) for c in range(labels.shape[1])]
    ap = np.stack([c[0] for c in curves], axis=1)
    auroc = np.stack([c[1] for c in curves], axis=1)
    return {
        "ap": ap,
        "auroc": auroc,
        "map_head": _nanmean(ap[:, list(head)], 1) if len(head) else np.full(len(w), np.nan),
        "map_tail": _nanmean(ap[:, list(tail)], 1) if len(tail) else np.full(len(w), np.nan),
        "map_all": _nanmean(ap, 1),
        "auroc_macro": _nanmean(auroc, 1),
    }


def bootstrap(
    labels: np.ndarray, scores: Mapping[str, np.ndarray], head: Sequence[int], tail: Sequence[int],
    resamples: int, seed: int, block: int = 100,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:  # fmt: skip
    """Point estimates and bootstrap replicates of every method's metrics on the same resamples.

    ``scores[method]`` is (S, N, K): S seeds, the same S for every method. Returns
    (point, replicates): point[method][metric] is the seed mean on the full test set
    ((K,) for "ap"/"auroc", scalar otherwise); replicates[method][metric] is (B,) or (B, K).
    """
    labels = np.asarray(labels, dtype=np.uint8)
    shapes = {m: np.shape(s) for m, s in scores.items()}
    seeds = {shape[0] for shape in shapes.values()}
    if len(seeds) != 1 or any(shape[1:] != labels.shape for shape in shapes.values()):
        raise ValueError(f"every method needs (S, N, K) scores with one S and (N, K) = {labels.shape}; got {shapes}")
    n_seeds, n = seeds.pop(), len(labels)
    ones = np.ones((1, n), dtype=np.int64)
    point = {
        m: {key: np.mean([v[0] for v in values], axis=0) for key, values in _per_seed(labels, s, ones, head, tail).items()}
        for m, s in scores.items()
    }  # fmt: skip
    seed_rng = seeded(seed, 1)
    out: dict[str, dict[str, list]] = {m: {} for m in scores}
    for w in resample_counts(n, resamples, seed, block):
        picks = np.stack([np.bincount(row, minlength=n_seeds) for row in seed_rng.integers(0, n_seeds, (len(w), n_seeds))])
        for m, s in scores.items():
            for key, values in _per_seed(labels, s, w, head, tail).items():
                stacked = np.stack(values)  # (S, b) or (S, b, K)
                weights = picks.T.reshape(picks.shape[1], len(w), *([1] * (stacked.ndim - 2)))
                out[m].setdefault(key, []).append((weights * stacked).sum(axis=0) / n_seeds)
    replicates = {m: {key: np.concatenate(parts) for key, parts in per.items()} for m, per in out.items()}
    return point, replicates


def _per_seed(labels, scores, w, head, tail) -> dict[str, list[np.ndarray]]:
    runs = [replicate_metrics(labels, s, w, head, tail) for s in scores]
    return {key: [r[key] for r in runs] for key in runs[0]}


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 (undefined replicates skipped; NaN where none is defined)."""
    alpha = (1 - level) / 2
    with warnings.catch_warnings():  # an all-NaN column gives NaN, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(np.asarray(replicates, dtype=np.float64), [alpha, 1 - alpha], axis=0)
    return lo, hi


def p_value(differences: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value of "no difference": 2 min(P(d <= 0), P(d >= 0)) with the +1 correction, <= 1."""
    d = np.asarray(differences, dtype=np.float64)
    defined = (~np.isnan(d)).sum(axis=0)
    below = (d <= 0).sum(axis=0)
    above = (d >= 0).sum(axis=0)
    p = 2 * np.minimum(below + 1, above + 1) / (defined + 1)
    return np.minimum(p, 1.0)


def holm(p: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of a family of tests (NaN entries are left out and stay NaN)."""
    named = sorted(((v, k) for k, v in p.items() if not np.isnan(v)))
    out, running = {k: float("nan") for k in p}, 0.0
    for rank, (value, key) in enumerate(named):
        running = max(running, min(1.0, (len(named) - rank) * value))
        out[key] = running
    return out


# ---------------------------------------------------------------------------- the stage


@config_section("eval.intervals")
@dataclass(frozen=True)
class IntervalsConfig:
    resamples: int = 1000  # bootstrap replicates of the test set (and of the seeds)
    level: float = 0.95  # coverage of every interval
    seed: int = 0  # seed of the resamples: the same for every method, so differences are paired
    block: int = 100  # replicates computed at once; memory O(block x test images)
    references: list[str] = field(default_factory=lambda: ["resample"])  # rows every difference is taken to, besides the scheme's real-only row


def read_scores(paths: Mapping[str, str | Path]) -> tuple[np.ndarray, np.ndarray, list[str], list[int], dict[str, np.ndarray]]:
    """(ids, labels, classes, seeds, {method: (S, N, K) scores}) of evaluate_classifier's .npz files, which must
    score the same test images, classes and seeds."""
    ref, out = None, {}
    for method, path in paths.items():
        if not Path(path).is_file():
            raise InputError(f"{path}: no test scores of {method!r} here; run evaluate_classifier for it.")
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in ("ids", "labels", "classes", "seeds", "scores")}
        if ref is None:
            ref = (path, data)
        else:
            first, want = ref
            for key, what in (("ids", "test images"), ("classes", "classes"), ("seeds", "classifier seeds")):
                if not np.array_equal(data[key], want[key]):
                    raise InputError(
                        f"{path}: its {what} differ from those of {first} ({list(want[key][:3])}... vs "
                        f"{list(data[key][:3])}...); paired comparisons need every method scored on the same test "
                        f"images with the same classes and seeds. Rerun evaluate_classifier for the older files."
                    )
        if data["scores"].shape != (len(data["seeds"]), *data["labels"].shape):
            raise InputError(f"{path}: scores {data['scores'].shape} do not match {len(data['seeds'])} seeds x "
                             f"labels {data['labels'].shape}; rerun evaluate_classifier for {method!r}.")  # fmt: skip
        out[method] = data["scores"].astype(np.float64)
    _, data = ref
    return data["ids"], data["labels"], [str(c) for c in data["classes"]], [int(s) for s in data["seeds"]], out


OWN = "own"  # the reference name of every row's own scheme's real-only row


def scheme_relative(reference: str) -> bool:
    """Whether reference ``reference`` is taken within each row's scheme: a set named alone (resample), not "own"
    or a row of its own (balanced+ours@0, baseline)."""
    if reference == OWN:
        return False
    scheme, synthetic = parse_row(reference)
    return synthetic is not None and scheme == "plain"


def reference_in(scheme: str, reference: str) -> str:
    """The row that reference ``reference`` stands for in a row of ``scheme``: "own", the scheme's real-only row
    (Baseline, Balanced, Logit-adjusted); a set named alone (resample), that set in the scheme (Balanced+Resample),
    so that a row is compared with the same set trained the same way; any other row (balanced+ours@0, baseline),
    itself."""
    if reference == OWN:
        return row_id(scheme, None)
    return row_id(scheme, parse_row(reference)[1]) if scheme_relative(reference) else reference


def row_references(rows: Sequence[str], references: Sequence[str]) -> dict[str, dict[str, str]]:
    """Per row, {name: the row it stands for} (:func:`reference_in`) for "own" and each of ``references``
    (eval.intervals.references), where that row was scored; a row is never its own reference."""
    out = {}
    for row in rows:
        scheme, _ = parse_row(row)
        chosen = {name: reference_in(scheme, name) for name in (OWN, *references)}
        out[row] = {name: r for name, r in chosen.items() if r in rows and r != row}
    return out


def compare_methods(paths: Mapping[str, str | Path], split: ClassSplit, cfg: IntervalsConfig) -> dict:
    """Stage compare_methods: every row's metrics with bootstrap intervals and its paired difference to its scheme's
    real-only row and to each reference of ``cfg.references`` (Resample) with interval, p-value and Holm-adjusted
    p-value (per reference and metric, over the rows); and, for every row of a scheme with an oracle row, its gain
    over the real-only row as a share of the oracle's (:func:`oracle_share`). A reference must be one of the rows."""
    ids, labels, classes, seeds, scores = read_scores(paths)
    if list(classes) != list(split.classes):
        raise InputError(f"the test scores' classes {classes} are not those of classes.json {split.classes}; rerun "
                         f"evaluate_classifier.")  # fmt: skip
    absent = [r for r in cfg.references if not any(reference_in(parse_row(m)[0], r) in scores for m in scores)]
    if absent:
        raise InputError(f"eval.intervals.references: {absent} are not among the methods scored ({list(scores)}); add "
                         f"them to eval.methods or remove them from the references.")  # fmt: skip
    head = [classes.index(c) for c in split.head]
    tail = [classes.index(c) for c in split.tail]
    point, reps = bootstrap(labels, scores, head, tail, cfg.resamples, cfg.seed, cfg.block)
    refs = row_references(list(scores), cfg.references)
    methods = {}
    for m in scores:
        entry = {}
        for key in GROUPS:
            lo, hi = interval(reps[m][key], cfg.level)
            entry[key] = {"estimate": float(point[m][key]), "lo": float(lo), "hi": float(hi)}
        for key in ("ap", "auroc"):
            lo, hi = interval(reps[m][key], cfg.level)
            entry[key] = {c: {"estimate": float(point[m][key][k]), "lo": float(lo[k]), "hi": float(hi[k])}
                          for k, c in enumerate(classes)}  # fmt: skip
        entry["references"] = refs[m]  # name -> the row it is, in this row's scheme
        entry["delta"] = {r: paired_difference(point[m], point[r], reps[m], reps[r], cfg.level)
                          for r in dict.fromkeys(refs[m].values())}  # fmt: skip
        scheme, synthetic = parse_row(m)
        real, oracle = row_id(scheme, None), row_id(scheme, "oracle")
        if synthetic not in (None, "oracle") and real in scores and oracle in scores:
            entry["oracle_share"] = oracle_share(point, reps, m, real, oracle, cfg.level)
        methods[m] = entry
    for ref in dict.fromkeys(r for rs in refs.values() for r in rs.values()):
        for key in GROUPS:
            adjusted = holm({m: e["delta"][ref][key]["p"] for m, e in methods.items() if ref in e["delta"]})
            for m, p in adjusted.items():
                methods[m]["delta"][ref][key]["p_holm"] = p
    return {
        "references": list(cfg.references),
        "resamples": cfg.resamples,
        "level": cfg.level,
        "seed": cfg.seed,
        "seeds": seeds,
        "n_test": int(len(ids)),
        "test_positives": {c: int(v) for c, v in zip(classes, labels.sum(axis=0))},
        "how": "percentile intervals over bootstrap replicates that resample the test images (the same resamples "
        "for every method) and, with several classifier seeds, the seeds (the same seed draw for every method; seed i "
        "of every row trained with draw i of its set); delta: the paired difference to the row's scheme's real-only "
        "row and to each reference (a reference named by a set alone: that set in the row's own scheme; the row's "
        "references map each name to the row it is); p: two-sided bootstrap p-value of a zero paired difference; p_holm: "
        "Holm-adjusted over the rows, per reference; oracle_share: the row's tail mAP gain over its scheme's "
        "real-only row divided by the oracle's, per replicate",
        "methods": methods,
    }


def oracle_share(point: Mapping, reps: Mapping, row: str, real: str, oracle: str, level: float) -> dict:
    """The tail mAP gain of ``row`` over ``real`` as a share of the gain of ``oracle`` over ``real`` (1: all a
    perfect generator could add), with a percentile interval of the replicate-wise ratios (paired: one resample for
    all three rows). The share is only defined when the oracle gains: ``defined`` says whether the oracle's own gain
    has an interval above 0; without it the ratio's interval is reported but means nothing."""
    gain = reps[row]["map_tail"] - reps[real]["map_tail"]
    room = reps[oracle]["map_tail"] - reps[real]["map_tail"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(room != 0, gain / room, np.nan)
    lo, hi = interval(ratio, level)
    room_lo, _ = interval(room, level)
    estimate_room = point[oracle]["map_tail"] - point[real]["map_tail"]
    estimate = (point[row]["map_tail"] - point[real]["map_tail"]) / estimate_room if estimate_room else float("nan")
    return {"estimate": float(estimate), "lo": float(lo), "hi": float(hi), "oracle_gain": float(estimate_room),
            "defined": bool(room_lo > 0)}  # fmt: skip


def paired_difference(point: Mapping, point_ref: Mapping, reps: Mapping, reps_ref: Mapping, level: float) -> dict:
    """Per group metric: the difference of the point estimates, and the interval and p-value of the replicate-wise
    differences (the same resamples for both, so it is paired: a method against itself gives exactly 0, p = 1)."""
    out = {}
    for key in GROUPS:
        d = reps[key] - reps_ref[key]
        lo, hi = interval(d, level)
        out[key] = {"estimate": float(point[key] - point_ref[key]), "lo": float(lo), "hi": float(hi),
                    "p": float(p_value(d))}  # fmt: skip
    return out
