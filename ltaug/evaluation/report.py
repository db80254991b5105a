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
from ltaug.common.variants import display_name, parse_row, row_id, set_name, variant_of
from ltaug.data.classes import ClassSplit
from ltaug.data.synthetic import SyntheticSet
from ltaug.evaluation.intervals import OWN, reference_in, scheme_relative
from ltaug.evaluation.report_notes import notes_for
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
    """One row per row of Table 1 (a set under a training scheme): numbers from evaluate_classifier ({row}.json),
    compare_methods (intervals.json) and evaluate_fid (per set, the same under every scheme); one group of Δ columns
    for the row's own scheme's real-only row (delta_tail_map_own, ...) and one per reference row
    (delta_tail_map_<reference>, ...), and the row's share of its scheme's oracle's gain.

    A row with a set but without any synthetic sample, or without its distance results or intervals, is an error:
    an empty set must not look like a row of zeros.
    """
    references = intervals.get("references", [])
    rows = []
    for method in methods:
        c = classifier[method]
        scheme, synthetic = parse_row(method)
        if synthetic is not None and not c["n"]["synthetic"]:
            raise InputError(
                f"evaluation of {method!r}: it was trained without any synthetic sample; its synthetic set is "
                f"empty or was not read. Rebuild results/synthetic/{synthetic}/ and rerun evaluate_classifier."
            )
        f = fid.get(synthetic) if synthetic else None
        if synthetic is not None and f is None:
            raise InputError(f"evaluation of {method!r}: no evaluate_fid results of {synthetic!r}; run evaluate_fid for it.")
        i = intervals["methods"].get(method)
        if i is None:
            raise InputError(f"evaluation of {method!r}: not in intervals.json; rerun compare_methods.")
        std = c["std"]
        many = len(c["seeds"]) > 1
        row = {"method": method, "row": display_name(method), "scheme": scheme, "set": synthetic,
               "variant": variant_of(method), "metric": f["metric"] if f else None}  # fmt: skip
        for key in QUALITY:
            row[key] = f.get(key) if f else None
        for key, name in (("map_head", "head_map"), ("map_tail", "tail_map"), ("auroc_macro", "auroc_macro")):
            row[name] = i[key]["estimate"]
            row[f"{name}_lo"], row[f"{name}_hi"] = i[key]["lo"], i[key]["hi"]
            row[f"{name}_std"] = std[key] if many else None
        names = i.get("references", {})  # column -> the row it is in this row's scheme
        for column in (OWN, *references):
            for key, name in (("map_tail", "delta_tail_map"), ("map_head", "delta_head_map")):
                d = i.get("delta", {}).get(names.get(column), {}).get(key)
                for part in ("estimate", "lo", "hi", "p", "p_holm"):
                    row[f"{name}_{column}" if part == "estimate" else f"{name}_{column}_{part}"] = d[part] if d else None
        share = i.get("oracle_share") or {}
        row |= {"oracle_share": share.get("estimate"), "oracle_share_lo": share.get("lo"),
                "oracle_share_hi": share.get("hi"), "oracle_share_defined": share.get("defined")}  # fmt: skip
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
            "draws": len(c.get("draws") or []),
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
        for ref in (OWN, *references):
            name = display_name(reference_in(r["scheme"], ref))
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
        names = " and to ".join(["its scheme's real-only row", *(display_name(r) + (" of its scheme" if scheme_relative(r) else "")
                                                                   for r in references)])  # fmt: skip
        lines.insert(0, f"Differences of every row to {names} ({level:.0%} paired bootstrap interval; distinguishable "
                        f"when it excludes 0):")  # fmt: skip
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
    head = ["Method", "Avg Tail KID ↓", f"Avg Tail {metric} ↓", f"Head mAP ↑ {ci}", f"Tail mAP ↑ {ci}",
            f"Δ Tail mAP vs its scheme's real-only row {ci}", f"Share of the oracle's gain {ci}"]  # fmt: skip
    head += [f"Δ Tail mAP vs {display_name(ref)} {ci}" + (" (its scheme's)" if scheme_relative(ref) else "")
             for ref in references] + [f"Macro AUROC ↑ {ci}"]  # fmt: skip
    lines = [_line(head), "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [r["row"], _fmt(r["avg_tail_kid"], digits=4), _fmt(r["avg_tail_fd"], digits=2),
                 _ci(r["head_map"], r["head_map_lo"], r["head_map_hi"]), _ci(r["tail_map"], r["tail_map_lo"], r["tail_map_hi"])]  # fmt: skip
        for ref in (OWN, *references):
            key = f"delta_tail_map_{ref}"
            cells.append(_ci(r.get(key), r.get(f"{key}_lo"), r.get(f"{key}_hi"), sign=True))
            if ref == OWN:
                cells.append(_share(r))
        cells.append(_ci(r["auroc_macro"], r["auroc_macro_lo"], r["auroc_macro_hi"]))
        lines.append(_line(cells))
    quality = table[table["set"].notna()].drop_duplicates("set")
    if len(quality):
        demo = quality["tail_detector_fidelity"].notna().any()
        head = ["Method", "New ↑ (pixels / judge)", "d / d_real (pixels)", "Nearest is its source ↓", "Memorised ↓",
                "Label fidelity ↑"]  # fmt: skip
        head += [f"Detector fidelity ↑ {ci}", "Detector FPR, synthetic ↓"] if demo else []
        head += ["Precision ↑", "Recall ↑", "Coverage ↑"]
        lines += ["", "What the synthetic samples are (each set's first draw, the same under every scheme), per tail "
                  "class, averaged: new (and not copied), faithful; the oracle's fresh real images are what a real "
                  "image scores:", "", _line(head), "|" + "---|" * len(head)]  # fmt: skip
        for r in quality.to_dict("records"):
            r = {**r, "row": set_name(r["set"])}
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


def _share(r: dict) -> str:
    """A row's share of its scheme's oracle's gain: the estimate and its interval, "–" for a real-only row or without
    an oracle row, and marked "(oracle gains nothing)" when the oracle's own gain has an interval reaching 0."""
    if _missing(r.get("oracle_share")):
        return "–"
    text = _ci(r["oracle_share"], r["oracle_share_lo"], r["oracle_share_hi"], digits=2)
    return text if r.get("oracle_share_defined") else text + " (oracle gains nothing)"


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
        raise InputError("eval.methods is empty; list the sets to evaluate, e.g. [oracle, resample, smote, roentgen, ours].")
    classifier = {m: _read(Path(classifier_dir) / f"{m}.json", f"classifier results of {m!r}") for m in methods}
    sets_of = list(dict.fromkeys(parse_row(m)[1] for m in methods if parse_row(m)[1]))
    fid = {m: _read(Path(fid_dir) / f"{m}.json", f"distance results of {m!r}") for m in sets_of}
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
    last = parse_row(methods[-1])[0]  # the last scheme's rows, beside every scheme's real-only and oracle rows
    shown = [m for m in methods if parse_row(m)[0] == last or parse_row(m)[1] in (None, "oracle")]
    per_class_ap_plot(outdir / "per_class_ap.png", shown, intervals, split)
    forest_plot(outdir / "forest.png", table, [OWN, *references], intervals["level"])
    memorisation_panel(outdir / "memorisation.png", fid)
    novelty_panel(outdir / "novelty.png", fid, split)
    panels(outdir / "samples.png", sets, manifest, split)
    return table
