"""Stage report: the paper's Table 1 from the evaluation files, a per-class AP plot and Fig. 2-style panels.

Elberg, Parra, Petrache (arXiv 2405.01705), Table 1: one row per method (Baseline, SMOTE,
RoentGEN@75, Ours@0, Ours@1, Ours@5), columns Avg Tail FID, Head mAP, Tail mAP. Here also
Resample, KID, macro AUROC and tail label fidelity (and, on the demo, detector fidelity);
the distance column is named after its features (FID or FD-DenseNet). Every mAP carries its
95 % bootstrap interval and every method its paired difference to Baseline
(:mod:`ltaug.stats`, rule compare_methods), drawn as a forest plot; a second table holds
precision / recall / density / coverage and memorisation, with a panel of the synthetic
samples closest to a training image. Fig. 2 shows tail samples, their head
neighbours and the fused results; the panels here put, per tail class, the real tail image
and head neighbour a fused sample came from next to one sample of every method.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ltaug.data import ClassSplit
from ltaug.errors import InputError
from ltaug.images import open_image
from ltaug.io import atomic_path
from ltaug.synthetic import SyntheticSet

NAMES = {"baseline": "Baseline", "resample": "Resample", "smote": "SMOTE", "roentgen": "RoentGen", "ours": "Ours"}


def display_name(method: str) -> str:
    """baseline -> Baseline, roentgen@75 -> RoentGen@75, ours@5 -> Ours@5."""
    family, _, steps = method.partition("@")
    if family not in NAMES:
        raise ValueError(f"unknown method {method!r}; methods are {', '.join(NAMES)} (with @N where they take one)")
    return NAMES[family] + (f"@{steps}" if steps else "")


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
    and evaluate_fid.

    A method other than the baseline without a synthetic sample, or without its distance
    results or intervals, is an error: an empty set must not look like a row of zeros.
    """
    rows = []
    for method in methods:
        c = classifier[method]
        if method != "baseline" and not c["n"]["synthetic"]:
            raise InputError(
                f"evaluation of {method!r}: it was trained without any synthetic sample; its synthetic set is "
                f"empty or was not read. Rebuild results/synthetic/{method}/ and rerun evaluate_classifier."
            )
        f = fid.get(method)
        if method != "baseline" and f is None:
            raise InputError(f"evaluation of {method!r}: no evaluate_fid results; run evaluate_fid for it.")
        i = intervals["methods"].get(method)
        if i is None:
            raise InputError(f"evaluation of {method!r}: not in intervals.json; rerun compare_methods.")
        std = c["std"]
        many = len(c["seeds"]) > 1
        row = {"method": method, "row": display_name(method), "metric": f["metric"] if f else None}
        for key in ("avg_tail_kid", "avg_tail_fd", "avg_tail_precision", "avg_tail_recall", "avg_tail_density",
                    "avg_tail_coverage", "avg_memorised"):  # fmt: skip
            row[key] = f.get(key) if f else None
        for key, name in (("map_head", "head_map"), ("map_tail", "tail_map"), ("auroc_macro", "auroc_macro")):
            row[name] = i[key]["estimate"]
            row[f"{name}_lo"], row[f"{name}_hi"] = i[key]["lo"], i[key]["hi"]
            row[f"{name}_std"] = std[key] if many else None
        for key, name in (("map_tail", "delta_tail_map"), ("map_head", "delta_head_map")):
            d = i.get("delta", {}).get(key)
            for part in ("estimate", "lo", "hi", "p", "p_holm"):
                row[name if part == "estimate" else f"{name}_{part}"] = d[part] if d else None
        row |= {
            "tail_label_fidelity": f["avg_label_fidelity"] if f else None,
            "tail_detector_fidelity": f.get("avg_detector_fidelity") if f else None,
            "n_synthetic": c["n"]["synthetic"],
            "seeds": len(c["seeds"]),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(estimate, lo, hi, digits: int = 3, sign: bool = False) -> str:
    if _missing(estimate):
        return "–"
    f = f"+.{digits}f" if sign else f".{digits}f"
    return f"{estimate:{f}} [{lo:{f}}, {hi:{f}}]"


def _p(p, resamples: int | None = None) -> str:
    """A p-value; at the smallest a bootstrap of ``resamples`` replicates gives, 2 / (B + 1), as "≤ that"."""
    if _missing(p):
        return "–"
    if resamples and p <= 2 / (resamples + 1) * (1 + 1e-9):
        return f"≤ {2 / (resamples + 1):.3f}"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdicts(table: pd.DataFrame, level: float, resamples: int | None = None) -> list[str]:
    """One line per method: is its tail and head mAP difference to Baseline distinguishable from zero?"""
    lines = []
    for r in table.itertuples():
        if _missing(r.delta_tail_map):
            continue
        parts = []
        for what, d, lo, hi, p, holm in (("tail", r.delta_tail_map, r.delta_tail_map_lo, r.delta_tail_map_hi,
                                          r.delta_tail_map_p, r.delta_tail_map_p_holm),
                                         ("head", r.delta_head_map, r.delta_head_map_lo, r.delta_head_map_hi,
                                          r.delta_head_map_p, r.delta_head_map_p_holm)):  # fmt: skip
            if _missing(d):
                continue
            real = lo > 0 or hi < 0
            word = ("higher" if d > 0 else "lower") if real else "not distinguishable from Baseline"
            parts.append(f"{what} mAP {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (p {_p(p, resamples)}, Holm {_p(holm, resamples)}): "
                         + (f"{word} than Baseline" if real else word))  # fmt: skip
        lines.append(f"**{r.row}**: " + "; ".join(parts) + ".")
    if lines:
        lines.insert(0, f"Differences to Baseline ({level:.0%} paired bootstrap interval; distinguishable when it "
                        f"excludes 0):")  # fmt: skip
    return lines


def markdown(table: pd.DataFrame, notes: Sequence[str], level: float = 0.95, resamples: int | None = None) -> str:
    """Table 1 and the sample-quality table as GitHub markdown, the verdicts on the differences, then notes."""
    metric = next((m for m in table["metric"] if isinstance(m, str)), "FID")
    demo = table["tail_detector_fidelity"].notna().any()
    ci = f"[{level:.0%} CI]"
    head = ["Method", "Avg Tail KID ↓", f"Avg Tail {metric} ↓", f"Head mAP ↑ {ci}", f"Tail mAP ↑ {ci}",
            f"Δ Tail mAP vs Baseline {ci}", "p", f"Macro AUROC ↑ {ci}", "Tail label fidelity ↑"]  # fmt: skip
    head += ["Tail detector fidelity ↑"] if demo else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        cells = [r.row, _fmt(r.avg_tail_kid, digits=4), _fmt(r.avg_tail_fd, digits=2),
                 _ci(r.head_map, r.head_map_lo, r.head_map_hi), _ci(r.tail_map, r.tail_map_lo, r.tail_map_hi),
                 _ci(r.delta_tail_map, r.delta_tail_map_lo, r.delta_tail_map_hi, sign=True), _p(r.delta_tail_map_p, resamples),
                 _ci(r.auroc_macro, r.auroc_macro_lo, r.auroc_macro_hi), _fmt(r.tail_label_fidelity)]  # fmt: skip
        if demo:
            cells.append(_fmt(r.tail_detector_fidelity))
        lines.append("| " + " | ".join(cells) + " |")
    quality = table[table["avg_tail_kid"].notna()]
    if len(quality):
        lines += ["", "Sample quality per tail class, averaged (same features as the distances):", "",
                  "| Method | Precision ↑ | Recall ↑ | Density ↑ | Coverage ↑ | Memorised ↓ |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in quality.itertuples():
            cells = [r.row] + [_fmt(v) for v in (r.avg_tail_precision, r.avg_tail_recall, r.avg_tail_density,
                                                 r.avg_tail_coverage, r.avg_memorised)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    verdict = verdicts(table, level, resamples)
    text = "\n".join(lines) + "\n\n"
    if verdict:
        text += verdict[0] + "\n\n" + "\n".join(f"- {v}" for v in verdict[1:]) + "\n\n"
    return text + "\n".join(f"- {n}" for n in notes) + "\n"


def notes_for(
    split: ClassSplit, classifier: dict[str, dict], fid: dict[str, dict], detector: dict | None, intervals: dict
) -> list[str]:
    """The facts a reader needs beside the numbers: classifier, seeds, test split, what each column means."""
    base = classifier["baseline"] if "baseline" in classifier else next(iter(classifier.values()))
    seeds = len(intervals["seeds"])
    notes = [
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
    if any_fid:
        notes.append(
            f"Avg Tail {any_fid['metric']}: Frechet distance per tail class between its generated samples and its real "
            f"images of the {'/'.join(any_fid['real_splits'])} split(s), in the features of {any_fid['features']}, "
            f"averaged over tail classes; KID likewise (unbiased, polynomial kernel)."
            + (" FD-DenseNet is not Inception FID: compare it only within this table." if any_fid["metric"] != "FID" else "")
            + " With a few dozen real images per tail class the Frechet distance is dominated by its small-sample bias;"
            " KID is unbiased and is the headline."
        )
        ks = sorted({v["prdc_k"] for v in any_fid["per_class"].values() if v["prdc_k"]})
        k = f"k = {', '.join(map(str, ks))}" if ks else "undefined: fewer than 3 real images per tail class"
        mem = any_fid["memorisation"]
        notes.append(
            f"Precision / recall / density / coverage (Naeem et al. 2020, {k}) of each tail class's "
            f"samples against its real images, averaged. Memorised: share of samples whose nearest training image "
            f"({mem['train']} images) is closer than the {mem['percentile']:g}th percentile ({mem['threshold']:.3f}) of "
            f"{mem['reference']} real test images' nearest-training-image distances; a generator that does not copy "
            f"scores about {mem['percentile'] / 100:.2f}, one that copies training images 1 (memorisation.png shows "
            f"the closest pairs)."
        )
        real = [v["label_rate_real"] for v in any_fid["per_class"].values()]
        notes.append(
            "Tail label fidelity: share of the samples made for a tail class that the real-data classifier scores "
            f"positive for that class (threshold: best F1 on validation); on real images of those classes: {np.mean(real):.3f}."
        )
        if detector:
            parts = []
            for name in split.tail:
                test = detector["classes"].get(name, {}).get("test")
                if test:
                    parts.append(f"{name} sensitivity {_fmt(test['sensitivity'], digits=2)}, specificity "
                                 f"{_fmt(test['specificity'], digits=2)}")  # fmt: skip
            notes.append("Tail detector fidelity: share of the samples in which the demo's pattern detector finds the "
                         "finding; the detector on real test images: " + "; ".join(parts) + ".")  # fmt: skip
    return notes


def per_class_ap_plot(path: Path, methods: Sequence[str], intervals: dict, split: ClassSplit) -> None:
    """Grouped bars: test AP per class (head, medium, tail in that order), one bar per method, with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = split.head + split.medium + split.tail
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(order) + 2), 4.5))
    width = 0.8 / len(methods)
    x = np.arange(len(order))
    for m, method in enumerate(methods):
        ap = intervals["methods"][method]["ap"]
        values = np.array([[np.nan if ap[c][k] is None else ap[c][k] for k in ("estimate", "lo", "hi")] for c in order])
        error = np.abs(values[:, 1:].T - values[:, 0])
        ax.bar(x + (m - (len(methods) - 1) / 2) * width, values[:, 0], width, label=display_name(method),
               yerr=error, error_kw={"elinewidth": 0.6, "capsize": 1.2, "ecolor": "0.25"})  # fmt: skip
    first_tail = len(order) - len(split.tail)
    ax.axvspan(first_tail - 0.5, len(order) - 0.5, color="0.9", zorder=0)
    ax.text(first_tail - 0.4, 1.0, "tail classes", fontsize=9, va="top")
    ax.set_xticks(x, [re.sub(r"(.{12}\S*) ", r"\1\n", c) for c in order], fontsize=8)
    ax.set_ylabel("test AP")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def forest_plot(path: Path, table: pd.DataFrame, level: float) -> None:
    """Δ tail mAP and Δ head mAP of every method against Baseline with their paired intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[table["delta_tail_map"].notna()].reset_index(drop=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.45 * max(len(rows), 1) + 1.4), sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, (name, title) in zip(axes, (("delta_tail_map", "Δ tail mAP"), ("delta_head_map", "Δ head mAP"))):
        estimate = rows[name].to_numpy(dtype=float)
        lo, hi = rows[f"{name}_lo"].to_numpy(dtype=float), rows[f"{name}_hi"].to_numpy(dtype=float)
        real = (lo > 0) | (hi < 0)
        ax.axvline(0, color="0.5", lw=0.8, ls="--")
        ax.errorbar(estimate, y, xerr=[estimate - lo, hi - estimate], fmt="none", ecolor="0.3", capsize=3)
        ax.scatter(estimate, y, c=np.where(real, "tab:red", "0.4"), zorder=3, s=22)
        ax.set_title(f"{title} vs Baseline ({level:.0%} paired interval)", fontsize=9)
        ax.grid(axis="x", color="0.9")
    axes[0].set_yticks(y, rows["row"].tolist(), fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def memorisation_panel(path: Path, fid: dict[str, dict], pairs: int = 4) -> None:
    """Per method (rows), its ``pairs`` synthetic samples closest to a training image, each next to that image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(fid)
    fig, axes = plt.subplots(max(len(methods), 1), 2 * pairs, figsize=(1.25 * 2 * pairs, 1.45 * max(len(methods), 1)),
                             squeeze=False)  # fmt: skip
    for r, method in enumerate(methods):
        closest = fid[method]["memorisation"]["closest"][:pairs]
        for c in range(2 * pairs):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c // 2 >= len(closest):
                ax.axis("off")
                continue
            pair = closest[c // 2]
            image = pair["synthetic_path"] if c % 2 == 0 else pair["train_path"]
            ax.imshow(np.asarray(open_image(image).convert("L")), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"d {pair['distance']:.2f}" if c % 2 == 0 else "nearest train", fontsize=6)
            if c == 0:
                ax.set_ylabel(display_name(method), fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def panels(path: Path, sets: dict[str, SyntheticSet], manifest: pd.DataFrame, split: ClassSplit) -> None:
    """Fig. 2-style grid: per tail class, the real tail image and head neighbour of a fused sample (when the
    sets record tail_id / head_id), then one sample of every method for that class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = dict(zip(manifest["id"].astype(str), manifest["path"]))
    ours = [m for m in sets if m.startswith("ours@")]
    columns = ["real tail"] + (["head neighbour"] if ours else []) + [display_name(m) for m in sets]
    fig, axes = plt.subplots(len(split.tail), len(columns), figsize=(1.6 * len(columns), 1.75 * len(split.tail)), squeeze=False)
    for r, name in enumerate(split.tail):
        anchor = None
        if ours:
            first = sets[ours[0]].frame
            first = first[first["tail_class"] == name].iloc[0]
            anchor = {k: first[k] for k in ("tail_id", "head_id") if k in first.index}
        cells = [paths.get(str(anchor.get("tail_id")))] if anchor else [None]
        if ours:
            cells.append(paths.get(str(anchor.get("head_id"))))
        if cells[0] is None:  # no fused set (or it records no tail_id): a real training image of the class
            real = manifest[(manifest["split"] == "train") & (manifest[name] == 1)]
            cells[0] = real["path"].iloc[0] if len(real) else None
        for method, s in sets.items():
            rows = s.frame[s.frame["tail_class"] == name]
            if anchor and all(k in rows.columns for k in anchor):
                same = rows[np.logical_and.reduce([rows[k].astype(str) == str(v) for k, v in anchor.items()])]
                rows = same if len(same) else rows
            cells.append(str(s.root / rows["path"].iloc[0]))
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if cell is not None:
                ax.imshow(np.asarray(open_image(cell).convert("L")), cmap="gray", vmin=0, vmax=255)
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(
    outdir: str | Path, methods: Sequence[str], classifier_dir: str | Path, fid_dir: str | Path, split: ClassSplit,
    sets: dict[str, SyntheticSet], manifest: pd.DataFrame, intervals_path: str | Path, detector: dict | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Stage report: table1.csv, table1.md, per_class_ap.png, forest.png, memorisation.png and samples.png
    under ``outdir``."""
    if not methods:
        raise InputError("eval.methods is empty; list the methods to evaluate, e.g. [baseline, resample, smote, roentgen, ours].")
    classifier = {m: _read(Path(classifier_dir) / f"{m}.json", f"classifier results of {m!r}") for m in methods}
    fid = {m: _read(Path(fid_dir) / f"{m}.json", f"distance results of {m!r}") for m in methods if m != "baseline"}
    intervals = _read(Path(intervals_path), "bootstrap intervals (rule compare_methods)")
    table = build_table(methods, classifier, fid, intervals)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(outdir / "table1.csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    text = "# Table 1\n\n" + markdown(table, notes_for(split, classifier, fid, detector, intervals), intervals["level"],
                                         intervals["resamples"])
    with atomic_path(outdir / "table1.md") as tmp:
        Path(tmp).write_text(text)
    per_class_ap_plot(outdir / "per_class_ap.png", methods, intervals, split)
    forest_plot(outdir / "forest.png", table, intervals["level"])
    memorisation_panel(outdir / "memorisation.png", fid)
    panels(outdir / "samples.png", sets, manifest, split)
    return table
