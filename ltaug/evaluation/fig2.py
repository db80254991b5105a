"""Fig. 2 panels: one figure per tail class showing how its first fused sample was made.

Elberg, Parra, Petrache, *Long Tail Image Generation Through Feature Space Augmentation and
Iterated Learning* (arXiv 2405.01705), Fig. 2. Rows: the tail sample, its head neighbour, the
fused sample. Columns: the image (real, from the manifest), the channel-wise maximum-intensity
projection max_c z^s[c] of the sparse vector, the EigenCAM map, the binary mask (M^S = tail
map > tau_h for the tail, M^G = head map < tau_l for the head, and for the fused row the
positions taken from the tail vector, coins included), then the fused sample decoded
directly (ours@0) and after denoising (ours@s), one column per synthetic set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ltaug.backbone.latents import open_latents
from ltaug.common.errors import InputError
from ltaug.common.images import open_image
from ltaug.common.io import atomic_path
from ltaug.data.classes import ClassSplit
from ltaug.data.manifest import read_manifest
from ltaug.method.cam import open_cams, select_maps
from ltaug.method.checkpoint import load_il_model
from ltaug.method.fused_store import sample_generator, slug
from ltaug.method.fusion import FusionConfig, combine, config_masks


def mip(zs: torch.Tensor) -> np.ndarray:
    """Channel-wise maximum-intensity projection of a (C', h, w) sparse vector: (h, w)."""
    return zs.max(dim=0).values.numpy()


def _set_image(set_dir: Path, fused_id: str) -> tuple[str, np.ndarray]:
    manifest = pd.read_csv(set_dir / "manifest.csv", dtype=str)
    row = manifest[manifest["fused_id"] == fused_id]
    if row.empty:
        raise InputError(f"{set_dir}/manifest.csv: no image of fused sample {fused_id}; rerun generate.")
    steps = int(row["steps"].iloc[0])
    method = json.loads((set_dir / "set.json").read_text())["method"]  # ours@1 (the directory is its draw)
    name = f"{method}\n" + ("z_F decoded" if steps == 0 else f"denoised, s = {steps}")
    return name, np.asarray(Image.open(set_dir / row["path"].iloc[0]))


@torch.no_grad()
def fig2_panels(
    manifest_csv: str | Path,
    split: ClassSplit,
    latents_store: str | Path,
    cam_store: str | Path,
    fused_store: str | Path,
    il_path: str | Path,
    set_dirs: list[str | Path],
    outdir: str | Path,
) -> list[Path]:
    """Write ``<outdir>/<tail class>.png`` for every tail class, atomically; return the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    manifest = read_manifest(manifest_csv).set_index("id")
    il = load_il_model(il_path, "cpu")
    latents, cams, fused = open_latents(latents_store), open_cams(cam_store), open_latents(fused_store)
    cfg = FusionConfig(**fused.attrs["config"])
    method = cams.attrs.get("method", "eigencam")
    row_of = {sample_id: i for i, sample_id in enumerate(latents["ids"][:])}
    fused_tail = fused["tail_class"][:]
    written = []
    with atomic_path(outdir) as tmp:
        tmp.mkdir(parents=True)
        for t_index, t in enumerate(split.tail):
            first = np.flatnonzero(fused_tail == t)
            if len(first) == 0:
                raise InputError(f"{fused_store}: no fused sample of tail class {t!r}; rerun fuse.")
            f = int(first[0])
            fused_id = str(fused["ids"][f])
            tail_id, head_id = str(fused["tail_id"][f]), str(fused["head_id"][f])
            head_class = str(fused["head_class"][f])
            rows = [row_of[tail_id], row_of[head_id]]
            zs = il.model.student(torch.from_numpy(latents["z"].oindex[rows]))  # (2, C', h, w)
            maps = torch.from_numpy(select_maps(cams["maps"].oindex[rows], list(cams.attrs.get("map_classes", [])),
                                                [t, head_class], str(cam_store)))  # (2, h, w): M_t for t, M_h for h
            coins = sample_generator(cfg.seed, t_index, 0)  # the generator fuse drew sample 0's coins from
            masks = config_masks(cfg, maps[:1], maps[1:], coins)
            if not np.array_equal(masks.from_tail[0].numpy(), fused["from_tail"][f].astype(bool)):
                raise InputError(f"{fused_store}: sample {fused_id}'s stored mask is not the one its config gives; rerun fuse.")
            zs_f = combine(zs[:1], zs[1:], masks.from_tail)[0]  # (C', h, w), the fused sample's z_F^s
            region = "region of " if cfg.tail_mask == "region" else ""
            sets = [_set_image(Path(d), fused_id) for d in set_dirs]
            cols = max(4, 2 + len(sets))
            fig, axes = plt.subplots(3, cols, figsize=(2.2 * cols, 6.9), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            real = {i: np.asarray(open_image(manifest.loc[i, "path"]).convert("L")) for i in (tail_id, head_id)}
            panels = [
                (0, 0, real[tail_id], f"tail: {tail_id}\n{t}", "gray"),
                (0, 1, mip(zs[0]), "max_c z_t^s", "magma"),
                (0, 2, maps[0].numpy(), f"{method} M_t", "jet"),
                (0, 3, masks.specific[0].numpy(), f"M^S = {region}M_t > {cfg.tau_h}", "gray"),
                (1, 0, real[head_id], f"head: {head_id}\n{head_class}", "gray"),
                (1, 1, mip(zs[1]), "max_c z_h^s", "magma"),
                (1, 2, maps[1].numpy(), f"{method} M_h", "jet"),
                (1, 3, masks.generic[0].numpy(), f"M^G = M_h < {cfg.tau_l}", "gray"),
                (2, 0, masks.from_tail[0].numpy(), f"from tail ({masks.from_tail.float().mean():.0%})", "gray"),
                (2, 1, mip(zs_f), "max_c z_F^s", "magma"),
            ]
            panels += [(2, 2 + i, image, name, None) for i, (name, image) in enumerate(sets)]
            top = max(float(p[2].max()) for p in panels if p[4] == "magma")
            for r, c, image, title, cmap in panels:
                # images on [0, 255], masks and maps on [0, 1], the three projections on one shared scale
                limits = (0, 255) if image.dtype == np.uint8 else (0, top) if cmap == "magma" else (0, 1)
                axes[r, c].imshow(image.astype(np.float32) if image.dtype == bool else image, cmap=cmap,
                                  vmin=limits[0], vmax=limits[1], interpolation="nearest")  # fmt: skip
                axes[r, c].set_title(title, fontsize=8)
            fig.suptitle(f"Fig. 2, {t}: fused sample {fused_id}", fontsize=10)
            fig.tight_layout()
            path = tmp / f"{slug(t)}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(Path(outdir) / path.name)
    return written
