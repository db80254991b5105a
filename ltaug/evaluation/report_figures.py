"""The report's figures: per-class AP, the forest plot of the paired differences, and the sample panels.

Drawn by :func:`ltaug.evaluation.report.write_report` (stage report) from the evaluation files: test AP per
class and method with its interval; Δ tail and head mAP of every method against each reference
row (Baseline, Resample) with paired intervals; the synthetic samples closest to a training
image (memorisation); each set's median sample in novelty beside its nearest real image of the
class; and one sample of every method per tail class next to the real tail image and head
neighbour it came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ltaug.common.images import open_image
from ltaug.common.io import atomic_path
from ltaug.common.variants import display_name, variant_of
from ltaug.data.classes import ClassSplit
from ltaug.data.synthetic import SyntheticSet
from ltaug.evaluation.intervals import scheme_relative


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


def forest_plot(path: Path, table: pd.DataFrame, references: Sequence[str], level: float) -> None:
    """Δ tail mAP and Δ head mAP of every row against each reference (one row of panels per reference; "own": each
    row's own scheme's real-only row) with their paired intervals; red: the interval excludes 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = list(references) or [None]
    n = max(len(table) - 1, 1)
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(len(references), 2, figsize=(9, len(references) * (0.42 * n + 1.3)), squeeze=False)
    for r, ref in enumerate(references):
        rows = table[table[f"delta_tail_map_{ref}"].notna()].reset_index(drop=True) if ref else table.iloc[:0]
        y = np.arange(len(rows))[::-1]
        for ax, (what, title) in zip(axes[r], (("tail", "Δ tail mAP"), ("head", "Δ head mAP"))):
            if ref is None or len(rows) == 0:
                ax.axis("off")
                continue
            key = f"delta_{what}_map_{ref}"
            estimate = rows[key].to_numpy(dtype=float)
            lo, hi = rows[f"{key}_lo"].to_numpy(dtype=float), rows[f"{key}_hi"].to_numpy(dtype=float)
            real = (lo > 0) | (hi < 0)
            ax.axvline(0, color="0.5", lw=0.8, ls="--")
            ax.errorbar(estimate, y, xerr=[estimate - lo, hi - estimate], fmt="none", ecolor="0.3", capsize=3)
            ax.scatter(estimate, y, c=np.where(real, "tab:red", "0.4"), zorder=3, s=22)
            against = "its scheme's real-only row" if ref == "own" else display_name(ref)
            if scheme_relative(ref):
                against += " of its scheme"
            ax.set_title(f"{title} vs {against}\n({level:.0%} paired interval)", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(5))  # a few ticks: small differences print long labels
            ax.set_yticks(y, rows["row"].tolist(), fontsize=8)
            ax.grid(axis="x", color="0.9")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def novelty_panel(path: Path, fid: dict[str, dict], split: ClassSplit) -> None:
    """Per synthetic set (rows) and tail class, its median sample in pixel novelty beside the real training image of
    the class nearest to it, titled with their distance over the class's d_real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m, f in fid.items() if any("example" in v.get("novelty", {}) for v in f["per_class"].values())]
    fig, axes = plt.subplots(max(len(methods), 1), 2 * len(split.tail),
                             figsize=(1.2 * 2 * len(split.tail), 1.45 * max(len(methods), 1)), squeeze=False)  # fmt: skip
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    for r, method in enumerate(methods):
        for c, name in enumerate(split.tail):
            example = fid[method]["per_class"].get(name, {}).get("novelty", {}).get("example")
            if not example:
                axes[r, 2 * c].axis("off"), axes[r, 2 * c + 1].axis("off")
                continue
            for k, (image, title) in enumerate(((example["synthetic_path"], f"d/d_real {example['ratio']:.2f}"),
                                                (example["nearest_path"], "nearest real"))):  # fmt: skip
                ax = axes[r, 2 * c + k]
                ax.imshow(np.asarray(open_image(image).convert("L")), cmap="gray", vmin=0, vmax=255)
                ax.set_title(title if r else f"{name[:14]}\n{title}", fontsize=6)
            if c == 0:
                axes[r, 0].set_ylabel(display_name(method), fontsize=7)
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
    ours = [m for m in sets if variant_of(m)]
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
