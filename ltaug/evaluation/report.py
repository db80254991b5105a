"""Stage report: the paper's Table 1 from the evaluation files, what each synthetic set is, and the figures.

Elberg, Parra, Petrache (arXiv 2405.01705), Table 1: one row per method (Baseline, SMOTE,
RoentGEN@75, Ours@0, Ours@1, Ours@5), columns Avg Tail FID, Head mAP, Tail mAP. Here also
Resample, KID and macro AUROC; every mAP carries its 95 % bootstrap interval and every method
its paired difference to each reference row (Baseline and Resample, :mod:`ltaug.evaluation.intervals`, rule
compare_methods) with a verdict, drawn as a forest plot. Every configuration of the method is a
variant with rows of its own (:mod:`ltaug.common.variants`: the paper's settings are Ours-paper), and
the notes say what each does.

A second table says what each synthetic set is, the three things a good synthetic tail sample
must be at once: **new** (:mod:`ltaug.evaluation.novelty`: the share of samples at least as far from every
real training image of their class as those are from each other, in pixels and in the judge's
features; the share whose nearest training image is the one they were made from; memorisation),
**faithful** (label fidelity by the judge and, on the demo, the finding detector's hit rate
with its interval and its false-positive rate on the samples made for the other tail classes)
and, from Table 1, **useful**. On the demo the fidelity funnels of the variants stand side by
side: at which stage each loses the tail finding. Figures: :mod:`ltaug.evaluation.report_figures`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ltaug.common.errors import InputError
from ltaug.common.io import atomic_path
from ltaug.common.variants import REAL_ONLY, display_name, variant_of
from ltaug.data.classes import ClassSplit
from ltaug.data.synthetic import SyntheticSet
from ltaug.evaluation.report_figures import forest_plot, memorisation_panel, novelty_panel, panels, per_class_ap_plot

QUALITY = ("avg_tail_kid", "avg_tail_fd", "avg_tail_precision", "avg_tail_recall", "avg_tail_density",
           "avg_tail_coverage", "avg_memorised")  # fmt: skip
NOVELTY = ("pixels_new", "features_new", "pixels_median_ratio", "features_median_ratio", "own_source")


def _read(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no {what} here; run the stage that writes it.")
    return json.loads(path.read_text())


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    if _missing(mean):
        return "–"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None and not math.isnan(std) else "")


def build_table(methods: Sequence[str], classifier: dict[str, dict], fid: dict[str, dict], intervals: dict) -> pd.DataFrame:
    """One row per method: numbers from evaluate_classifier ({method}.json), compare_methods (intervals.json)
    and evaluate_fid; one group of Δ columns per reference row (delta_tail_map_<reference>, ...).

    A method other than the baseline without a synthetic sample, or without its distance
    results or intervals, is an error: an empty set must not look like a row of zeros.
    """
    references = intervals.get("references", [])
    rows = []
    for method in methods:
        c = classifier[method]
        if method not in REAL_ONLY and not c["n"]["synthetic"]:
            raise InputError(
                f"evaluation of {method!r}: it was trained without any synthetic sample; its synthetic set is "
                f"empty or was not read. Rebuild results/synthetic/{method}/ and rerun evaluate_classifier."
            )
        f = fid.get(method)
        if method not in REAL_ONLY and f is None:
            raise InputError(f"evaluation of {method!r}: no evaluate_fid results; run evaluate_fid for it.")
        i = intervals["methods"].get(method)
        if i is None:
            raise InputError(f"evaluation of {method!r}: not in intervals.json; rerun compare_methods.")
        std = c["std"]
        many = len(c["seeds"]) > 1
        row = {"method": method, "row": display_name(method), "variant": variant_of(method),
               "metric": f["metric"] if f else None}  # fmt: skip
        for key in QUALITY:
            row[key] = f.get(key) if f else None
        for key, name in (("map_head", "head_map"), ("map_tail", "tail_map"), ("auroc_macro", "auroc_macro")):
            row[name] = i[key]["estimate"]
            row[f"{name}_lo"], row[f"{name}_hi"] = i[key]["lo"], i[key]["hi"]
            row[f"{name}_std"] = std[key] if many else None
        for ref in references:
            for key, name in (("map_tail", "delta_tail_map"), ("map_head", "delta_head_map")):
                d = i.get("delta", {}).get(ref, {}).get(key)
                for part in ("estimate", "lo", "hi", "p", "p_holm"):
                    row[f"{name}_{ref}" if part == "estimate" else f"{name}_{ref}_{part}"] = d[part] if d else None
        novelty = (f or {}).get("novelty") or {}
        detector = (f or {}).get("detector") or {}
        row |= {
            **{f"novelty_{key}": novelty.get(key) for key in NOVELTY},
            "tail_label_fidelity": f["avg_label_fidelity"] if f else None,
            "tail_detector_fidelity": f.get("avg_detector_fidelity") if f else None,
            "tail_detector_fidelity_lo": detector.get("fidelity", {}).get("lo"),
            "tail_detector_fidelity_hi": detector.get("fidelity", {}).get("hi"),
            "detector_fpr_synthetic": detector.get("fpr_synthetic", {}).get("rate"),
            "n_synthetic": c["n"]["synthetic"],
            "seeds": len(c["seeds"]),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(estimate, lo, hi, digits: int = 3, sign: bool = False) -> str:
    if _missing(estimate):
        return "–"
    f = f"+.{digits}f" if sign else f".{digits}f"
    if _missing(lo) or _missing(hi):
        return f"{estimate:{f}}"
    return f"{estimate:{f}} [{lo:{f}}, {hi:{f}}]"


def _p(p, resamples: int | None = None) -> str:
    """A p-value; at the smallest a bootstrap of ``resamples`` replicates gives, 2 / (B + 1), as "≤ that"."""
    if _missing(p):
        return "–"
    if resamples and p <= 2 / (resamples + 1) * (1 + 1e-9):
        return f"≤ {2 / (resamples + 1):.3f}"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdicts(table: pd.DataFrame, references: Sequence[str], level: float, resamples: int | None = None) -> list[str]:
    """One line per method: is its tail and head mAP difference to each reference distinguishable from zero?"""
    lines = []
    for r in table.to_dict("records"):
        parts = []
        for ref in references:
            name = display_name(ref)
            for what in ("tail", "head"):
                key = f"delta_{what}_map_{ref}"
                d = r.get(key)
                if _missing(d):
                    continue
                lo, hi, p, holm = (r[f"{key}_{part}"] for part in ("lo", "hi", "p", "p_holm"))
                real = lo > 0 or hi < 0
                word = (f"{'higher' if d > 0 else 'lower'} than {name}") if real else f"not distinguishable from {name}"
                parts.append(f"{what} mAP {d:+.3f} [{lo:+.3f}, {hi:+.3f}] vs {name} (p {_p(p, resamples)}, Holm "
                             f"{_p(holm, resamples)}): {word}")  # fmt: skip
        if parts:
            lines.append(f"**{r['row']}**: " + "; ".join(parts) + ".")
    if lines:
        names = " and to ".join(display_name(r) for r in references)
        lines.insert(0, f"Differences to {names} ({level:.0%} paired bootstrap interval; distinguishable when it "
                        f"excludes 0):")  # fmt: skip
    return lines


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(
    table: pd.DataFrame, notes: Sequence[str], level: float = 0.95, resamples: int | None = None,
    references: Sequence[str] = (), funnel: str = "",
) -> str:  # fmt: skip
    """Table 1, the table of what the synthetic samples are (new, faithful), the verdicts on the differences, the
    funnels side by side (demo), then the notes, as GitHub markdown."""
    metric = next((m for m in table["metric"] if isinstance(m, str)), "FID")
    ci = f"[{level:.0%} CI]"
    head = ["Method", "Avg Tail KID ↓", f"Avg Tail {metric} ↓", f"Head mAP ↑ {ci}", f"Tail mAP ↑ {ci}"]
    head += [f"Δ Tail mAP vs {display_name(ref)} {ci}" for ref in references] + [f"Macro AUROC ↑ {ci}"]
    lines = [_line(head), "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [r["row"], _fmt(r["avg_tail_kid"], digits=4), _fmt(r["avg_tail_fd"], digits=2),
                 _ci(r["head_map"], r["head_map_lo"], r["head_map_hi"]), _ci(r["tail_map"], r["tail_map_lo"], r["tail_map_hi"])]  # fmt: skip
        for ref in references:
            key = f"delta_tail_map_{ref}"
            cells.append(_ci(r.get(key), r.get(f"{key}_lo"), r.get(f"{key}_hi"), sign=True))
        cells.append(_ci(r["auroc_macro"], r["auroc_macro_lo"], r["auroc_macro_hi"]))
        lines.append(_line(cells))
    quality = table[~table["method"].isin(REAL_ONLY)]
    if len(quality):
        demo = quality["tail_detector_fidelity"].notna().any()
        head = ["Method", "New ↑ (pixels / judge)", "d / d_real (pixels)", "Nearest is its source ↓", "Memorised ↓",
                "Label fidelity ↑"]  # fmt: skip
        head += [f"Detector fidelity ↑ {ci}", "Detector FPR, synthetic ↓"] if demo else []
        head += ["Precision ↑", "Recall ↑", "Coverage ↑"]
        lines += ["", "What the synthetic samples are, per tail class, averaged: new (and not copied), faithful:", "",
                  _line(head), "|" + "---|" * len(head)]  # fmt: skip
        for r in quality.to_dict("records"):
            new = "–" if _missing(r["novelty_pixels_new"]) else f"{r['novelty_pixels_new']:.2f} / {_fmt(r['novelty_features_new'], digits=2)}"
            cells = [r["row"], new, _fmt(r["novelty_pixels_median_ratio"], digits=2), _fmt(r["novelty_own_source"], digits=2),
                     _fmt(r["avg_memorised"]), _fmt(r["tail_label_fidelity"])]  # fmt: skip
            if demo:
                cells += [_ci(r["tail_detector_fidelity"], r["tail_detector_fidelity_lo"], r["tail_detector_fidelity_hi"]),
                          _fmt(r["detector_fpr_synthetic"])]  # fmt: skip
            cells += [_fmt(r[k]) for k in ("avg_tail_precision", "avg_tail_recall", "avg_tail_coverage")]
            lines.append(_line(cells))
    verdict = verdicts(table, references, level, resamples)
    text = "\n".join(lines) + "\n\n"
    if verdict:
        text += verdict[0] + "\n\n" + "\n".join(f"- {v}" for v in verdict[1:]) + "\n\n"
    if funnel:
        text += funnel + "\n"
    return text + "\n".join(f"- {n}" for n in notes) + "\n"


def funnel_table(funnels: dict[str, pd.DataFrame], off_path: set[str] = frozenset()) -> str:
    """Every variant's fidelity funnel (mean over tail classes) side by side: one column per variant, one row per
    stage and measure; a variant's CAM row is its own method's, its sets' rows are named @s. Then, per variant, the
    step of its path where the finding drops most (the il stage is left out of the path of the variants in
    ``off_path``, whose images do not carry D(S(z)) alone)."""
    if not funnels:
        return ""
    columns, order = {}, []
    for variant, frame in funnels.items():
        mean = frame[frame["class"] == "mean"]
        values = {}
        for r in mean.itertuples():
            stage = "cam" if r.stage.startswith("cam:") else r.stage.replace(f"{variant}@", "@") if "@" in r.stage else r.stage
            key = f"{stage} {r.measure}"
            values[key] = r.value
            order.append(key)
        columns[variant] = values
    rows = list(dict.fromkeys(order))
    fpr = next(iter(funnels.values()))
    fpr = fpr[(fpr["class"] == "mean") & (fpr["stage"] == "real")]["fpr"]
    lines = ["Fidelity funnel of every variant, mean over tail classes (funnel/<variant>.md per class; the judge's "
             + (f"false-positive rate on real negatives {fpr.iloc[0]:.3f}" if len(fpr) and pd.notna(fpr.iloc[0]) else "rate")
             + "): where each configuration loses the tail finding.", "",
             _line(["stage", *(display_name(v + "@0")[:-2] for v in funnels)]), "|---|" + "---|" * len(funnels)]  # fmt: skip
    for key in rows:
        lines.append(_line([key] + [_fmt(columns[v].get(key)) for v in funnels]))
    lines.append("")
    for variant in funnels:  # the chain a tail finding goes through, read as shares of it that survive
        chain = [(k, v) for k, v in columns[variant].items() if k.endswith(("hit_rate", "box_in_mask", "box_from_tail"))
                 and pd.notna(v) and not (variant in off_path and k.startswith("il "))]  # fmt: skip
        drops = [(chain[i][1] - chain[i + 1][1], chain[i][0], chain[i + 1][0], chain[i][1], chain[i + 1][1])
                 for i in range(len(chain) - 1)]  # fmt: skip
        if drops:
            drop, a, b, before, after = max(drops)
            lines.append(f"- {display_name(variant + '@0')[:-2]} loses most of the finding between `{a}` and `{b}` "
                         f"({before:.3f} -> {after:.3f}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def notes_for(
    split: ClassSplit, classifier: dict[str, dict], fid: dict[str, dict], detector: dict | None, intervals: dict,
    variants: dict[str, dict] | None = None, judge: dict | None = None,
) -> list[str]:  # fmt: skip
    """The facts a reader needs beside the numbers: what each variant does, classifier, seeds, test split, the
    judge, what each column means."""
    base = classifier["baseline"] if "baseline" in classifier else next(iter(classifier.values()))
    seeds = len(intervals["seeds"])
    notes = [f"Variant {v['line']}." for v in (variants or {}).values()]
    notes += [
        f"Intervals: {intervals['level']:.0%} percentile bootstrap over {intervals['resamples']} resamples of the "
        f"{intervals['n_test']} test images, the same resamples for every method, so each Δ is a paired difference "
        + (f"(the {seeds} classifier seeds are resampled too, the same draw for every method: the interval holds the "
           f"seed-to-seed spread of the mean of {seeds} trainings); " if seeds > 1 else "(one classifier seed: the "
           "interval holds the test-set variance only, not the spread between trainings); ")
        + f"p: two-sided bootstrap p-value of a zero difference (≤ {2 / (intervals['resamples'] + 1):.3f}: no "
        "replicate reached zero, the smallest value this many resamples can give); Holm: adjusted over the methods.",
        f"Classifier: {base['classifier']} at {base['config']['image_size']} px, {base['config']['steps']} steps, "
        f"seeds {base['seeds']}; trained on {base['n']['train_real']} real training images (+ the method's synthetic "
        f"set), selected on {base['n']['val']} validation images, scored on the {base['n']['test']} test images only.",
        f"Head classes: {', '.join(split.head)}. Tail classes: {', '.join(split.tail)} (test positives: "
        + ", ".join(f"{c} {base['test_positives'][c]}" for c in split.tail) + ").",
    ]
    policy = split.labels or {}
    uncertain, blank = policy.get("uncertain", "error"), policy.get("blank", "error")
    parts = [f"uncertain (-1) labels read as {int(uncertain == 'ones')} (U-{uncertain.capitalize()})"] if uncertain != "error" else []
    parts += ["blank labels read as 0"] if blank != "error" else []
    if parts:
        notes.append("Labels: " + "; ".join(parts) + " (data.uncertain, data.blank).")
    if policy.get("ignore_labels"):
        notes.append(f"Labels: names dropped as no class (data.ignore_labels): {', '.join(policy['ignore_labels'])}.")
    any_fid = next(iter(fid.values()), None)
    if judge:
        notes.append(
            f"Judge: {any_fid['judge'] if any_fid else 'a DenseNet'}, trained on the real training images only with "
            f"class-balanced batches (eval.judge.balance {judge.get('balance', 1.0):g}), so that its features see the "
            f"tail; test tail mAP {judge['mean']['map_tail']:.3f}, head mAP {judge['mean']['map_head']:.3f}. Distances, "
            "precision / recall, memorisation and novelty are measured in its features, label fidelity by its scores."
        )
    if any_fid:
        notes.append(
            f"Avg Tail {any_fid['metric']}: Frechet distance per tail class between its generated samples and its real "
            f"images of the {'/'.join(any_fid['real_splits'])} split(s), in the features of {any_fid['features']}, "
            f"averaged over tail classes; KID likewise (unbiased, polynomial kernel)."
            + (" FD-DenseNet is not Inception FID: compare it only within this table." if any_fid["metric"] != "FID" else "")
            + " With a few dozen real images per tail class the Frechet distance is dominated by its small-sample bias;"
            " KID is unbiased and is the headline."
        )
        notes.append(
            "New: share of a set's samples that are at least as far from every real training image of their tail class "
            "as the real images of that class are from their nearest other (the median of those distances, d_real), in "
            "grayscale pixels at the classifier's input size / in the judge's features; d / d_real: the median ratio (0: "
            "a copy). Nearest is its source: share of samples whose nearest training image (of any class) is one they "
            "were made from (tail_id, head_id, source_id, neighbour_id): a near-copy of its source (novelty.png shows "
            "each set's median sample beside its nearest real image)."
        )
        ks = sorted({v["prdc_k"] for v in any_fid["per_class"].values() if v["prdc_k"]})
        k = f"k = {', '.join(map(str, ks))}" if ks else "undefined: fewer than 3 real images per tail class"
        mem = any_fid["memorisation"]
        notes.append(
            f"Precision / recall / coverage (Naeem et al. 2020, {k}; density in table1.csv) of each tail class's "
            f"samples against its real images, averaged. Memorised: share of samples whose nearest training image "
            f"({mem['train']} images) is closer than the {mem['percentile']:g}th percentile ({mem['threshold']:.3f}) of "
            f"{mem['reference']} real test images' nearest-training-image distances; a generator that does not copy "
            f"scores about {mem['percentile'] / 100:.2f}, one that copies training images 1 (memorisation.png shows "
            f"the closest pairs)."
        )
        real = [v["label_rate_real"] for v in any_fid["per_class"].values()]
        notes.append(
            "Label fidelity: share of the samples made for a tail class that the judge scores positive for that class "
            f"(threshold: best F1 on validation); on real held-out images of those classes: {np.mean(real):.3f}."
        )
        if detector:
            parts = []
            for name in split.tail:
                test = detector["classes"].get(name, {}).get("test")
                if test:
                    parts.append(f"{name} sensitivity {_fmt(test['sensitivity'], digits=2)}, specificity "
                                 f"{_fmt(test['specificity'], digits=2)}")  # fmt: skip
            fitted = next(iter(detector["classes"].values()), {}).get("fitted_on", "val")
            notes.append(
                "Detector fidelity: share of the samples made for a tail class in which the demo's pattern detector finds "
                f"its finding, mean over tail classes with a bootstrap interval over the samples; the detector's region "
                f"and threshold are fitted on the {fitted} split only (no training image, which the samples are made "
                "from). Detector FPR, synthetic: its rate on the samples made for the other tail classes, negative for "
                "the class; a fidelity near it means the finding is not there. On real test images: "
                + "; ".join(parts) + "."
            )
    return notes


def write_report(
    outdir: str | Path, methods: Sequence[str], classifier_dir: str | Path, fid_dir: str | Path, split: ClassSplit,
    sets: dict[str, SyntheticSet], manifest: pd.DataFrame, intervals_path: str | Path, detector: dict | None = None,
    variants: dict[str, dict] | None = None, judge_path: str | Path | None = None,
    funnels: dict[str, str | Path] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Stage report: table1.csv, table1.md, per_class_ap.png, forest.png, memorisation.png, novelty.png and
    samples.png under ``outdir``. ``variants``: per variant, the line its notes print and whether the funnel's il
    stage is on its path; ``funnels``: the fidelity funnel of each variant (demo)."""
    if not methods:
        raise InputError("eval.methods is empty; list the methods to evaluate, e.g. [baseline, resample, smote, roentgen, ours].")
    classifier = {m: _read(Path(classifier_dir) / f"{m}.json", f"classifier results of {m!r}") for m in methods}
    fid = {m: _read(Path(fid_dir) / f"{m}.json", f"distance results of {m!r}") for m in methods if m not in REAL_ONLY}
    intervals = _read(Path(intervals_path), "bootstrap intervals (rule compare_methods)")
    judge = _read(Path(judge_path), "judge results (rule train_judge)") if judge_path else None
    references = intervals.get("references", [])
    table = build_table(methods, classifier, fid, intervals)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(outdir / "table1.csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    frames = {v: pd.read_csv(path) for v, path in (funnels or {}).items()}
    notes = notes_for(split, classifier, fid, detector, intervals, variants, judge)
    off_path = {v for v, info in (variants or {}).items() if not info.get("il_on_path", True)}
    text = "# Table 1\n\n" + markdown(table, notes, intervals["level"], intervals["resamples"], references,
                                         funnel_table(frames, off_path))  # fmt: skip
    with atomic_path(outdir / "table1.md") as tmp:
        Path(tmp).write_text(text)
    per_class_ap_plot(outdir / "per_class_ap.png", methods, intervals, split)
    forest_plot(outdir / "forest.png", table, references, intervals["level"])
    memorisation_panel(outdir / "memorisation.png", fid)
    novelty_panel(outdir / "novelty.png", fid, split)
    panels(outdir / "samples.png", sets, manifest, split)
    return table
