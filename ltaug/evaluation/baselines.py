"""Baselines of Table 1, each written as a synthetic set (:mod:`ltaug.data.synthetic`).

Elberg, Parra, Petrache (arXiv 2405.01705), Sec. 4 / Table 1 compare the fused samples with
SMOTE and with plain text-to-image generation by the diffusion model (RoentGen@75); every
method adds ``fusion.n_per_class`` samples to each tail class. Three baselines:

``smote``     SMOTE (Chawla et al. 2002) in the VAE latent space, within each tail class:
              z = z_i + lambda * (z_j - z_i), z_j one of the k nearest training latents of the
              same tail class, lambda ~ U(0, 1). The draws follow imbalanced-learn's SMOTE
              exactly (so a test can compare the two); multi-label rows take the union of the
              pair's labels, as MLSMOTE (Charte et al. 2015) does. Decoded by the VAE.
``roentgen``  text-to-image from the class-name prompt, N scheduler steps, with the guidance
              scale of generation (:func:`ltaug.backbone.diffusion.sample_latents`); labels: the class.
``resample``  class-balanced oversampling of the real tail images: no new image, the
              simplest rival. Each training positive of the class is repeated in turn.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from ltaug.backbone.latents import decode_latents, to_rgb_pixels
from ltaug.common.config import config_section
from ltaug.common.errors import InputError
from ltaug.common.seeds import seed64, stream
from ltaug.data.image_store import ImageStores, read_images
from ltaug.data.synthetic import SyntheticSetWriter


@config_section("baselines")
@dataclass(frozen=True)
class BaselinesConfig:
    seed: int = 0  # seed of every random draw of the baselines (SMOTE, Resample: seed + class index; text-to-image: per sample)
    smote_k: int = 5  # SMOTE: neighbours a sample is interpolated towards (imbalanced-learn's k_neighbors)
    batch_size: int = 50  # latents decoded or sampled at once; memory is O(batch_size)


# ---------------------------------------------------------------------------- pure functions


def smote_draws(x: np.ndarray, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, neighbours, steps) of ``n`` SMOTE samples of the (m, D) points ``x``.

    Sample s interpolates x[rows[s]] towards its neighbour x[neighbours[s]] by steps[s] in
    [0, 1). Neighbours are the min(k, m - 1) nearest points (Euclidean, the point itself
    excluded) from scikit-learn's NearestNeighbors; the draws are imbalanced-learn's: one
    RandomState(seed), a flat index over the (m, k) neighbour table by randint, then the steps
    by uniform. A single point has no neighbour: every sample is then a copy of it.
    """
    m = len(x)
    if m == 0:
        raise ValueError("SMOTE needs at least 1 point")
    k = min(k, m - 1)
    if k == 0:  # one point: no neighbour; every sample is that point (the caller says so in its log)
        table = np.zeros((1, 1), dtype=int)
        k = 1
    else:
        nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
        table = nn.kneighbors(x, return_distance=False)[:, 1:]  # (m, k), self excluded
    rng = np.random.RandomState(seed)
    flat = rng.randint(low=0, high=table.size, size=n)
    steps = rng.uniform(size=n)
    rows, cols = np.floor_divide(flat, k), np.mod(flat, k)
    return rows, table[rows, cols], steps


def smote_interpolate(x: np.ndarray, rows: np.ndarray, neighbours: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """x[rows] + steps * (x[neighbours] - x[rows]), for (m, ...) points and (n,) draws -> (n, ...)."""
    step = steps.reshape((-1,) + (1,) * (x.ndim - 1))
    return x[rows] + step * (x[neighbours] - x[rows])


def balanced_repeats(n_items: int, n: int, seed: int) -> np.ndarray:
    """``n`` indices into ``n_items`` items: each item used floor(n / n_items) or one more times,
    in a seeded random order (class-balanced oversampling without favourites)."""
    rng = np.random.default_rng(seed)
    reps = -(-n // n_items)
    order = np.concatenate([rng.permutation(n_items) for _ in range(reps)])
    return order[:n]


def _class_positives(labels: np.ndarray, classes: Sequence[str], name: str, source: str, method: str) -> np.ndarray:
    rows = np.flatnonzero(labels[:, list(classes).index(name)] == 1)
    if len(rows) == 0:
        raise InputError(f"{source}: tail class {name!r} has no training sample, so {method} has nothing to start from.")
    return rows


# ---------------------------------------------------------------------------- stages


def make_smote(
    store, vae, classes: Sequence[str], tail: Sequence[str], n_per_class: int, cfg: BaselinesConfig, outdir, source: str
) -> dict:
    """Stage baseline_smote: SMOTE on the training latents of each tail class, decoded by ``vae``.

    ``store`` is the opened training latent store (:func:`ltaug.backbone.latents.open_latents`). A tail
    class with one training sample has no neighbour to interpolate towards: its samples are
    copies of that latent, which the log and set.json ("per_class") say.
    """
    labels = store["labels"][:]  # (N, K)
    ids = np.array(store["ids"][:].tolist(), dtype=object)  # numpy StringDType -> Python str
    summary = {}
    info = {"k": cfg.smote_k, "seed": cfg.seed, "per_class": summary}  # filled in below, written on completion
    with SyntheticSetWriter(outdir, "smote", classes, tail, n_per_class, info) as out:
        for t, name in enumerate(tail):
            rows_t = _class_positives(labels, classes, name, source, "SMOTE")
            if len(rows_t) < 2:
                print(f"smote: warning: tail class {name!r} has 1 training sample and no neighbour to interpolate "
                      f"towards; its {n_per_class} samples are decodings of that one latent", file=sys.stderr)
            z = store["z"].get_orthogonal_selection((rows_t,)).astype(np.float64)  # (m, C, h, w)
            draws = smote_draws(z.reshape(len(z), -1), n_per_class, cfg.smote_k, cfg.seed + t)
            rows, neighbours, steps = draws
            z_new = smote_interpolate(z, rows, neighbours, steps).astype(np.float32)  # (n, C, h, w)
            union = np.maximum(labels[rows_t[rows]], labels[rows_t[neighbours]])  # MLSMOTE: union of the pair's labels
            provenance = pd.DataFrame(
                {"tail_class": name, "source_id": ids[rows_t[rows]], "neighbour_id": ids[rows_t[neighbours]], "step": steps}
            )
            for start in range(0, n_per_class, cfg.batch_size):
                part = slice(start, start + cfg.batch_size)
                images = decode_latents(vae, torch.from_numpy(z_new[part]), batch_size=cfg.batch_size)
                out.add(images, provenance.iloc[part], union[part])
            summary[name] = {"training_samples": int(len(rows_t)), "k": int(min(cfg.smote_k, len(rows_t) - 1))}
            print(f"smote: {name}: {n_per_class} samples from {len(rows_t)} training latents", file=sys.stderr)
    return summary


def make_resample(
    manifest: pd.DataFrame, classes: Sequence[str], tail: Sequence[str], n_per_class: int, image_size: int,
    cfg: BaselinesConfig, outdir, source: str, stores: ImageStores | None = None,
) -> dict:  # fmt: skip
    """Stage baseline_resample: copies of the real training images of each tail class, balanced.

    Images come from the training split's image store at ``image_size`` (latents.image_size), the
    pixels encode_latents encodes, so every synthetic set has the images at the latent store's
    size (None: the image files); labels are the real rows.
    """
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    labels = train[list(classes)].to_numpy(dtype=np.uint8)
    summary = {}
    with SyntheticSetWriter(outdir, "resample", classes, tail, n_per_class, {"seed": cfg.seed}) as out:
        for t, name in enumerate(tail):
            rows_t = _class_positives(labels, classes, name, source, "resample")
            picks = rows_t[balanced_repeats(len(rows_t), n_per_class, cfg.seed + t)]
            for start in range(0, n_per_class, cfg.batch_size):
                part = picks[start : start + cfg.batch_size]
                pixels = to_rgb_pixels(read_images(train.iloc[part], image_size, stores, source))
                provenance = pd.DataFrame({"tail_class": name, "source_id": train["id"].to_numpy()[part]})
                out.add(pixels, provenance, labels[part])
            summary[name] = {"training_samples": int(len(rows_t))}
            print(f"resample: {name}: {n_per_class} copies of {len(rows_t)} training images", file=sys.stderr)
    return summary


def noise_generator(seed: int, t: int, j: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The noise generator of text-to-image sample j of tail class t (its index in classes.json's tail)."""
    return torch.Generator(device=device).manual_seed(seed64(seed, stream("baseline_roentgen.noise"), t, j))


def make_text_to_image(
    sd, classes: Sequence[str], tail: Sequence[str], n_per_class: int, num_steps: int, guidance: float,
    cfg: BaselinesConfig, outdir, method: str, template: str = "{classes}",
) -> dict:  # fmt: skip
    """Stage baseline_roentgen: ``n_per_class`` images of each tail class from its name alone.

    The prompt is the class name in ``template`` (generate.prompt_template), as
    :func:`ltaug.backbone.diffusion.prompt` writes it for a sample of that class only; ``num_steps`` scheduler steps (RoentGen@75: 75), classifier-free
    guidance ``guidance``. Sample j of tail class t draws its noise from its own generator, seeded by
    (seed, stream("baseline_roentgen.noise"), t, j) (:mod:`ltaug.common.seeds`), so a set is the same for the
    same seed on the same device whatever the batch size.
    """
    from ltaug.backbone.diffusion import prompt, sample_latents

    summary = {}
    info = {"num_steps": num_steps, "guidance_scale": guidance, "seed": cfg.seed, "model": sd.path, "prompt_template": template}
    with SyntheticSetWriter(outdir, method, classes, tail, n_per_class, info) as out:
        for t, name in enumerate(tail):
            onehot = np.zeros(len(classes), dtype=np.uint8)
            onehot[list(classes).index(name)] = 1
            text = prompt(onehot, classes, template)
            for start in range(0, n_per_class, cfg.batch_size):
                n = min(cfg.batch_size, n_per_class - start)
                generators = [noise_generator(cfg.seed, t, j, sd.device) for j in range(start, start + n)]
                z = sample_latents(sd, [text] * n, num_steps, guidance, generators)  # (n, 4, h, w)
                images = decode_latents(sd.vae, z, batch_size=cfg.batch_size)
                provenance = pd.DataFrame({"tail_class": [name] * n, "prompt": [text] * n})
                out.add(images, provenance, np.tile(onehot, (n, 1)))
            summary[name] = {"prompt": text}
            print(f"{method}: {name}: {n_per_class} images from the prompt {text!r}", file=sys.stderr)
    return summary



def make_oracle(
    classes: Sequence[str], tail: Sequence[str], n_per_class: int, image_size: int, draw: int, outdir,
    demo=None, manifest: pd.DataFrame | None = None, seed: int = 0, source: str = "the manifest",
) -> dict:  # fmt: skip
    """Stage baseline_oracle: draw ``draw`` of the oracle, ``n_per_class`` fresh real images of every tail class,
    written as a synthetic set (its labels: what each image shows), the most a generator could add.

    On the demo (``demo``, its DemoConfig) they are drawn by the demo generator from streams of their own
    (:func:`ltaug.data.demo.render_oracle`), disjoint from train, val and test and from every other draw, each
    with the class and the other findings at their prevalences; the set keeps every finding's box (boxes.csv).
    On real data (``manifest``) they come from the held-out share of the training images (split holdout,
    eval.oracle.holdout), which no other row or stage sees: each of a class's held-out images in turn, in an
    order seeded by (``seed``, draw, class), repeated when the class has fewer than ``n_per_class`` of them.
    """
    from ltaug.common.images import fit
    from ltaug.data.demo import oracle_findings, render_oracle

    summary = {}
    info = {"draw": draw, "source": "demo generator" if demo is not None else "held-out training images"}
    boxes = []
    with SyntheticSetWriter(outdir, "oracle", classes, tail, n_per_class, info) as out:
        for t, name in enumerate(tail):
            if demo is not None:
                findings = oracle_findings(demo, name, n_per_class, draw)
                images, labels, ids = [], np.zeros((n_per_class, len(classes)), dtype=np.uint8), []
                for j, present in enumerate(findings):
                    image, found = render_oracle(demo, name, draw, j, present)
                    images.append(fit(image, image_size))
                    labels[j, [list(classes).index(c) for c in present if c in classes]] = 1
                    ids.append(f"demo-oracle-d{draw}-{j:05d}-{name}")
                    boxes += [(ids[-1], *box) for box in found]
                unknown = sorted({c for present in findings for c in present} - set(classes))
                if unknown:
                    raise InputError(f"{source}: the demo draws {unknown}, which are not classes of classes.json; "
                                     f"rerun split_classes.")  # fmt: skip
                provenance = pd.DataFrame({"tail_class": name, "source_id": ids})
                out.add(to_rgb_pixels(np.stack(images)), provenance, labels)
                summary[name] = {"fresh_images": n_per_class}
            else:
                held = manifest[manifest["split"] == "holdout"].reset_index(drop=True)
                rows_t = np.flatnonzero(held[name].to_numpy() == 1)
                if len(rows_t) == 0:
                    raise InputError(f"{source}: tail class {name!r} has no held-out training image (split holdout), so "
                                     f"the oracle has nothing to add; raise eval.oracle.holdout.")  # fmt: skip
                picks = rows_t[balanced_repeats(len(rows_t), n_per_class, seed64(seed, stream("oracle.picks"), draw, t))]
                for start in range(0, n_per_class, 64):
                    part = picks[start : start + 64]
                    pixels = to_rgb_pixels(read_images(held.iloc[part], image_size, None, source))
                    provenance = pd.DataFrame({"tail_class": name, "source_id": held["id"].to_numpy()[part]})
                    out.add(pixels, provenance, held[list(classes)].to_numpy(dtype=np.uint8)[part])
                summary[name] = {"held_out_images": int(len(rows_t))}
            print(f"oracle: {name}: {n_per_class} real images ({summary[name]})", file=sys.stderr)
        out.info["per_class"] = summary
        if boxes:  # the ground truth of every finding, in the demo's pixel frame
            out.info["boxes_image_size"] = demo.image_size
            out.write_table("boxes.csv", pd.DataFrame(boxes, columns=["dicom_id", "class", "x0", "y0", "x1", "y1"]))
    return summary
