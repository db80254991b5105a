"""Stage fidelity_funnel: how much of each tail finding survives every stage of the pipeline.

Elberg, Parra, Petrache (arXiv 2405.01705) report that their augmentation did not help the
tail and guess that labels are lost during diffusion. With ground truth (the demo keeps the
box of every drawn finding) the question has an answer: for every tail class t, the tail
training samples that fusion starts from are followed through

    real          the real images                              hit rate of the judge
    vae           decode(encode(x)): the VAE round trip         hit rate
    il            decode(D(S(z))): the IL round trip            hit rate
    cam:<method>  the variant's CAM map for t                   peak in the finding's box; share of
                                                                the box inside M^S (as fuse builds it)
    fusion        F, the positions z_F^s takes from the tail    share of the box taken from the tail
    <variant>@s   the variant's synthetic sets                  hit rate on its samples made for t

One funnel per variant (rule fidelity_funnel), so that each configuration, the paper's among
them, shows at which stage it loses the tail finding; the report puts them side by side.

The judge is the demo's finding detector (:class:`ltaug.evaluation.detector.Detector`, its false-positive
rate on real negative test images in column ``fpr``). Without boxes (real data) the image
stages are scored by the classifier trained on real data only, at its per-class F1 threshold
(label fidelity): its hit rate on the real tail images (its recall) is the ``real`` row, so
nobody over-reads the others, and ``fpr`` is its rate on real negative test images; the CAM
and box stages need boxes and are left out. No stage of the method reads the boxes: only
this measurement does.

Output ``funnel.csv``: stage, measure, class (a tail class or ``mean``), n, value, fpr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ltaug.backbone.latents import decode_latents, open_latents
from ltaug.data.classes import ClassSplit
from ltaug.data.image_store import ImageStores, read_images
from ltaug.data.synthetic import SyntheticSet
from ltaug.evaluation.detector import Detector
from ltaug.evaluation.features import DenseNetFeatures
from ltaug.method.cam import open_training_stores, select_maps
from ltaug.method.fusion import specific_mask

COLUMNS = ["stage", "measure", "class", "n", "value", "fpr"]
HIT, PEAK, COVER, FROM_TAIL = "hit_rate", "peak_in_box", "box_in_mask", "box_from_tail"

Judge = Callable[[str, Sequence[np.ndarray]], float]  # (class, grayscale images) -> share judged positive


def gray(rgb: np.ndarray) -> list[np.ndarray]:
    """(B, H, W, 3) uint8 -> B grayscale (H, W) uint8 images, as PIL converts them (the judges' input)."""
    return [np.asarray(Image.fromarray(x).convert("L")) for x in rgb]


def box_mask(box: Sequence[int], size: int) -> np.ndarray:
    """(size, size) bool of a half-open pixel box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def upsample(cells: np.ndarray, factor: int) -> np.ndarray:
    """(h, w) -> (h * factor, w * factor): every latent cell over the pixels it covers."""
    return np.kron(cells, np.ones((factor, factor), dtype=cells.dtype))


def peak_in_box(cam: np.ndarray, box: Sequence[int], factor: int) -> bool:
    """Whether the (h, w) map's maximum (the first, row-major) lies in a latent cell that overlaps the box."""
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    x0, y0, x1, y1 = box
    return bool(c * factor < x1 and (c + 1) * factor > x0 and r * factor < y1 and (r + 1) * factor > y0)


def box_share(cells: np.ndarray, box: Sequence[int], factor: int) -> float:
    """Share of the box's pixels that lie in latent cells where the (h, w) bool mask holds."""
    pixels = upsample(cells.astype(bool), factor)
    inside = box_mask(box, pixels.shape[0])
    return float(pixels[inside].mean())


def detector_judge(detector: Detector) -> tuple[Judge, Callable[[str], float]]:
    """(judge, fpr) of the demo's finding detector; fpr: 1 - its specificity on real negative test images."""
    def fpr(name: str) -> float:
        specificity = detector.classes.get(name, {}).get("test", {}).get("specificity")
        return float("nan") if specificity is None else 1.0 - specificity

    def judge(name: str, images: Sequence[np.ndarray]) -> float:
        rate = detector.rate(name, images) if len(images) else None  # None: no detector for the class
        return float("nan") if rate is None else rate

    return judge, fpr


def classifier_judge(model_path: str | Path, manifest: pd.DataFrame, device: torch.device,
                     stores: ImageStores | None = None) -> tuple[Judge, Callable[[str], float]]:  # fmt: skip
    """(judge, fpr) of the classifier trained on real data only, at its per-class F1 thresholds;
    fpr: its rate on the real test images negative for the class."""
    net = DenseNetFeatures(model_path, device)
    classes = list(net.meta["classes"])

    def scores(images: Sequence[np.ndarray]) -> np.ndarray:
        x = np.stack([np.asarray(Image.fromarray(im).resize((net.size,) * 2, Image.Resampling.BILINEAR))
                      if im.shape != (net.size, net.size) else im for im in images])  # fmt: skip
        return net(torch.from_numpy(x[:, None]), 64)[1]  # (B, K)

    def judge(name: str, images: Sequence[np.ndarray]) -> float:
        return float((scores(images)[:, classes.index(name)] >= net.meta["thresholds"][name]).mean())

    test = manifest[manifest["split"] == "test"]

    def fpr(name: str) -> float:
        negative = test[test[name] == 0]
        return judge(name, list(read_images(negative, net.size, stores))) if len(negative) else float("nan")

    return judge, fpr


def fidelity_funnel(
    manifest: pd.DataFrame,
    split: ClassSplit,
    latents_store: str | Path,
    cam_store: str | Path,
    il_path: str | Path,
    fused_store: str | Path | None,
    vae,
    sets: dict[str, SyntheticSet],
    tau_h: float,
    judge: Judge,
    fpr: Callable[[str], float],
    boxes: pd.DataFrame | None = None,
    box_size: int | None = None,
    batch_size: int = 32,
    stores: ImageStores | None = None,
) -> pd.DataFrame:
    """The funnel table (``COLUMNS``) for every tail class of ``split``, then the mean over them.

    ``manifest``: id, path, split, classes; ``boxes``: the demo's boxes.csv (dicom_id, split,
    class, x0, y0, x1, y1) in pixels of ``box_size`` x ``box_size`` images, or None for real data
    (no CAM or box stages); ``stores``: the image stores of decode_images (None: the files). ``vae`` decodes
    latents on its device; the IL model runs on the CPU.
    """
    il, latents, cams, ids = open_training_stores(latents_store, cam_store, il_path, split.classes)
    classes = list(split.classes)
    train = manifest[manifest["split"] == "train"]
    train_of = train.set_index(train["id"].astype(str), drop=False)  # the tail samples' rows, by id
    map_classes = list(cams.attrs.get("map_classes", []))
    method = cams.attrs.get("method", "eigencam")
    h = latents["z"].shape[-1]
    rows: list[dict] = []

    def add(stage: str, measure: str, name: str, values: Sequence[float] | float, n: int, rate: float | None) -> None:
        value = float(np.mean(values)) if not np.isscalar(values) else float(values)
        rows.append({"stage": stage, "measure": measure, "class": name, "n": n, "value": value, "fpr": rate})

    fused = open_latents(fused_store) if fused_store is not None else None
    config = fused.attrs.get("config", {}) if fused is not None else {}
    tail_mask, grow = config.get("tail_mask", "cells"), config.get("region_grow", 1)
    for name in split.tail:
        rows_t = np.flatnonzero(latents["labels"][:, classes.index(name)])  # the tail samples fusion starts from
        tail_ids = ids[rows_t]
        rate = fpr(name)
        real = list(read_images(train_of.loc[list(map(str, tail_ids))], vae_size(vae, h), stores))
        add("real", HIT, name, judge(name, real), len(real), rate)
        z = torch.from_numpy(latents["z"].oindex[rows_t])  # (n_t, C, h, w)
        add("vae", HIT, name, judge(name, gray(decode_latents(vae, z, batch_size))), len(z), rate)
        with torch.no_grad():
            z_il = torch.cat([il.model.decoder(il.model.student(z[a : a + batch_size]))
                              for a in range(0, len(z), batch_size)])  # fmt: skip
        add("il", HIT, name, judge(name, gray(decode_latents(vae, z_il, batch_size))), len(z), rate)
        if boxes is not None:
            mine = boxes[(boxes["class"] == name) & (boxes["split"] == "train")].set_index("dicom_id")
            factor = vae_size(vae, h) // h
            scale = vae_size(vae, h) / box_size  # boxes are in pixels of the demo's images
            box_of = {i: np.rint(mine.loc[i, ["x0", "y0", "x1", "y1"]].to_numpy(float) * scale).astype(int)
                      for i in tail_ids}  # fmt: skip
            stored = select_maps(cams["maps"].oindex[rows_t], map_classes, [name] * len(rows_t), str(cam_store))
            stage = f"cam:{method}"
            add(stage, PEAK, name, [peak_in_box(m, box_of[i], factor) for m, i in zip(stored, tail_ids)], len(stored), None)
            specific = specific_mask(torch.from_numpy(stored), tau_h, tail_mask, grow).numpy()  # M^S as fuse builds it
            add(stage, COVER, name, [box_share(m, box_of[i], factor) for m, i in zip(specific, tail_ids)], len(stored), None)
            if fused is not None:
                mine_f = np.flatnonzero(fused["tail_class"][:] == name)
                from_tail = fused["from_tail"].oindex[mine_f]  # (n, h, w)
                source = fused["tail_id"].oindex[mine_f]
                add("fusion", FROM_TAIL, name, [box_share(f, box_of[i], factor) for f, i in zip(from_tail, source)],
                    len(mine_f), None)  # fmt: skip
        for method_name, synthetic in sets.items():
            idx = np.flatnonzero(synthetic.frame["tail_class"].to_numpy() == name)
            paths = synthetic.paths()  # once per set, not once per image
            images = [np.asarray(Image.open(paths[i]).convert("L")) for i in idx]
            add(method_name, HIT, name, judge(name, images), len(idx), rate)
        print(f"fidelity_funnel: {name}: " + ", ".join(f"{r['stage']} {r['measure']} {r['value']:.2f}"
              for r in rows if r["class"] == name), file=sys.stderr)  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    means = table.groupby(["stage", "measure"], sort=False).agg(n=("n", "sum"), value=("value", "mean"), fpr=("fpr", "mean"))
    means = means.reset_index().assign(**{"class": "mean"})[COLUMNS]
    return pd.concat([table, means], ignore_index=True)


def vae_size(vae, h: int) -> int:
    """Pixels per image side of latents of side h: 8 h for the SD VAE (2 ** (levels - 1) in general)."""
    return h * 2 ** (len(vae.config.block_out_channels) - 1)


def markdown(table: pd.DataFrame, tail: Sequence[str]) -> str:
    """The funnel as a Markdown table: one row per (stage, measure), one column per tail class and the mean."""
    wide = table.pivot_table(index=["stage", "measure"], columns="class", values="value", sort=False)
    fpr = table[table["class"] == "mean"].set_index(["stage", "measure"])["fpr"]
    cols = [*tail, "mean"]
    lines = ["| stage | measure | " + " | ".join(cols) + " | judge FPR (mean) |", "|---|---|" + "---|" * (len(cols) + 1)]
    for (stage, measure), row in wide.iterrows():
        rate = fpr.get((stage, measure))
        cells = [f"{row[c]:.3f}" if c in row and pd.notna(row[c]) else "–" for c in cols]
        lines.append(f"| {stage} | {measure} | " + " | ".join(cells) + f" | {'–' if pd.isna(rate) else f'{rate:.3f}'} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, table: pd.DataFrame, tail: Sequence[str]) -> None:
    """Two panels: hit rate per image stage (a line per tail class, the mean bold, judge FPR dashed),
    and the CAM / fusion measures of the box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    hits = table[table["measure"] == HIT]
    stages = list(dict.fromkeys(hits["stage"]))
    for name in [*tail, "mean"]:
        values = hits[hits["class"] == name].set_index("stage")["value"].reindex(stages)
        axes[0].plot(stages, values, marker="o", lw=2.5 if name == "mean" else 1, color="k" if name == "mean" else None,
                     label=name)  # fmt: skip
    fpr = hits[hits["class"] == "mean"]["fpr"].mean()
    if pd.notna(fpr):
        axes[0].axhline(fpr, ls="--", color="grey", label="judge FPR on real negatives")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("share of tail samples judged positive")
    axes[0].tick_params(axis="x", rotation=30)
    axes[0].legend(fontsize=7)
    boxes = table[(table["measure"] != HIT) & (table["class"] == "mean")]
    if len(boxes):
        labels = [f"{s}\n{m}" for s, m in zip(boxes["stage"], boxes["measure"])]
        axes[1].bar(labels, boxes["value"], color="tab:blue")
        axes[1].set_ylim(0, 1)
        axes[1].tick_params(axis="x", rotation=30, labelsize=7)
        axes[1].set_title("the finding's box: CAM and fusion (mean over tail classes)", fontsize=9)
    else:
        axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
