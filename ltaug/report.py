"""Stage report: the paper's Table 1 from the evaluation files, a per-class AP plot and Fig. 2-style panels.

Elberg, Parra, Petrache (arXiv 2405.01705), Table 1: one row per method (Baseline, SMOTE,
RoentGEN@75, Ours@0, Ours@1, Ours@5), columns Avg Tail FID, Head mAP, Tail mAP. Here also
Resample, KID, macro AUROC and tail label fidelity (and, on the demo, detector fidelity);
the distance column is named after its features (FID or FD-DenseNet). With more than one
classifier seed every mAP is "mean ± std". Fig. 2 shows tail samples, their head
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


def _fmt(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None and not math.isnan(std) else "")


def build_table(methods: Sequence[str], classifier: dict[str, dict], fid: dict[str, dict]) -> pd.DataFrame:
    """One row per method: numbers from evaluate_classifier ({method}.json) and evaluate_fid.

    A method other than the baseline without a synthetic sample, or without its distance
    results, is an error: an empty set must not look like a row of zeros.
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
        mean, std = c["mean"], c["std"]
        many = len(c["seeds"]) > 1
        rows.append({
            "method": method,
            "row": display_name(method),
            "metric": f["metric"] if f else None,
            "avg_tail_fd": f["avg_tail_fd"] if f else None,
            "avg_tail_kid": f["avg_tail_kid"] if f else None,
            "head_map": mean["map_head"], "head_map_std": std["map_head"] if many else None,
            "tail_map": mean["map_tail"], "tail_map_std": std["map_tail"] if many else None,
            "auroc_macro": mean["auroc_macro"], "auroc_macro_std": std["auroc_macro"] if many else None,
            "tail_label_fidelity": f["avg_label_fidelity"] if f else None,
            "tail_detector_fidelity": f.get("avg_detector_fidelity") if f else None,
            "n_synthetic": c["n"]["synthetic"],
            "seeds": len(c["seeds"]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, notes: Sequence[str]) -> str:
    """Table 1 as a GitHub markdown table, followed by notes."""
    metric = next((m for m in table["metric"] if isinstance(m, str)), "FID")
    demo = table["tail_detector_fidelity"].notna().any()
    head = ["Method", f"Avg Tail {metric} ↓", "Avg Tail KID ↓", "Head mAP ↑", "Tail mAP ↑", "Macro AUROC ↑",
            "Tail label fidelity ↑"] + (["Tail detector fidelity ↑"] if demo else [])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        cells = [r.row, _fmt(r.avg_tail_fd, digits=2), _fmt(r.avg_tail_kid, digits=4), _fmt(r.head_map, r.head_map_std),
                 _fmt(r.tail_map, r.tail_map_std), _fmt(r.auroc_macro, r.auroc_macro_std), _fmt(r.tail_label_fidelity)]  # fmt: skip
        if demo:
            cells.append(_fmt(r.tail_detector_fidelity))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def notes_for(split: ClassSplit, classifier: dict[str, dict], fid: dict[str, dict], detector: dict | None) -> list[str]:
    """The facts a reader needs beside the numbers: classifier, seeds, test split, what each column means."""
    base = classifier["baseline"] if "baseline" in classifier else next(iter(classifier.values()))
    notes = [
        f"Classifier: {base['classifier']} at {base['config']['image_size']} px, {base['config']['steps']} steps, "
        f"seeds {base['seeds']}; trained on {base['n']['train_real']} real training images (+ the method's synthetic "
        f"set), selected on {base['n']['val']} validation images, scored on the {base['n']['test']} test images only.",
        f"Head classes: {', '.join(split.head)}. Tail classes: {', '.join(split.tail)} (test positives: "
        + ", ".join(f"{c} {base['test_positives'][c]}" for c in split.tail) + ").",
    ]
    any_fid = next(iter(fid.values()), None)
    if any_fid:
        notes.append(
            f"Avg Tail {any_fid['metric']}: Frechet distance per tail class between its generated samples and its real "
            f"images of the {'/'.join(any_fid['real_splits'])} split(s), in the features of {any_fid['features']}, "
            f"averaged over tail classes; KID likewise (unbiased, polynomial kernel)."
            + (" FD-DenseNet is not Inception FID: compare it only within this table." if any_fid["metric"] != "FID" else "")
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


def per_class_ap_plot(path: Path, methods: Sequence[str], classifier: dict[str, dict], split: ClassSplit) -> None:
    """Grouped bars: test AP per class (head, medium, tail in that order), one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = split.head + split.medium + split.tail
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(order) + 2), 4.5))
    width = 0.8 / len(methods)
    x = np.arange(len(order))
    for m, method in enumerate(methods):
        ap = classifier[method]["mean"]["ap"]
        values = [np.nan if ap[c] is None else ap[c] for c in order]
        ax.bar(x + (m - (len(methods) - 1) / 2) * width, values, width, label=display_name(method))
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
    sets: dict[str, SyntheticSet], manifest: pd.DataFrame, detector: dict | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Stage report: table1.csv, table1.md, per_class_ap.png and samples.png under ``outdir``."""
    if not methods:
        raise InputError("eval.methods is empty; list the methods to evaluate, e.g. [baseline, resample, smote, roentgen, ours].")
    classifier = {m: _read(Path(classifier_dir) / f"{m}.json", f"classifier results of {m!r}") for m in methods}
    fid = {m: _read(Path(fid_dir) / f"{m}.json", f"distance results of {m!r}") for m in methods if m != "baseline"}
    table = build_table(methods, classifier, fid)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(outdir / "table1.csv") as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    text = "# Table 1\n\n" + markdown(table, notes_for(split, classifier, fid, detector))
    with atomic_path(outdir / "table1.md") as tmp:
        Path(tmp).write_text(text)
    per_class_ap_plot(outdir / "per_class_ap.png", methods, classifier, split)
    panels(outdir / "samples.png", sets, manifest, split)
    return table
