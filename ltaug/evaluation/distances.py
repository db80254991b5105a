"""Stage evaluate_fid: Frechet and kernel distances per tail class, and label fidelity of a synthetic set.

Elberg, Parra, Petrache (arXiv 2405.01705), Table 1 reports the FID between the generated
images of each tail class and that class's real images, averaged over the tail classes
("Avg Tail FID"). The Frechet distance between Gaussians fitted to two feature sets is

    FD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))        (Heusel et al. 2017, Eq. 6)

FID uses InceptionV3 pool features; they come from torchmetrics (torch-fidelity's
InceptionV3) and only from a local weights file (``eval.fid.inception_weights``): nothing is
downloaded. Without one, the features are the penultimate layer of the judge (rule
train_judge: the DenseNet of Table 1 trained on real data only, with class-balanced batches so
that its features see the tail findings; Baseline's, trained on image frequencies, barely
does), and the column is called FD-DenseNet, so that nobody mistakes it for Inception FID. KID (Binkowski et al. 2018: unbiased MMD^2
with the cubic polynomial kernel, torchmetrics' ``poly_mmd``, averaged over random subsets)
is given beside it, since it suits the small sets of tail classes.

Label fidelity (:mod:`ltaug.evaluation.detector`) comes from the same forward pass of the judge; on the
demo, the finding detector's hit rate on the samples made for each class and its false-positive
rate on the samples made for the other tail classes, with bootstrap intervals over the samples.
Novelty (:mod:`ltaug.evaluation.novelty`): how far each sample is from the real training images of its
class, in grayscale pixels at the judge's input size (rule real_features stores them) and in the
judge's features, and whether its nearest training image is the one it was made from.

In the same features: precision, recall, density and coverage (Naeem et al. 2020, the
``prdc`` package: k-nearest-neighbour balls around real and generated samples), and
memorisation: the share of generated samples whose nearest training image is closer than
the ``memorisation_percentile``-th percentile of the real test images' nearest-training-image
distances (rule real_features embeds the training split once for every method). A synthetic
medical image that copies a training image leaks that patient's image; a generator that
does not copy scores about the percentile itself (5 % by default), one that copies scores 1.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltaug.common.errors import InputError
from ltaug.common.images import load_image
from ltaug.data.classes import ClassSplit
from ltaug.data.image_store import ImageStores, read_images
from ltaug.data.synthetic import SyntheticSet
from ltaug.evaluation.detector import Detector, label_fidelity
from ltaug.evaluation.features import FeatureSpace, FidConfig


# ---------------------------------------------------------------------------- pure functions


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if len(f) < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {len(f)}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)), the Frechet distance of two Gaussians.

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2 (real and
    >= 0 for covariances; rounding noise is cut off), as torchmetrics computes it, so no
    matrix square root of a singular product is needed (covariances of fewer samples than
    dimensions are singular).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    eig = np.linalg.eigvals(sigma1 @ sigma2)
    root_trace = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * root_trace)


def feature_frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FD between Gaussians fitted to (N, D) real and (M, D) generated features."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` random subsets of min(subset_size, N, M) rows of each set
    of torchmetrics' unbiased polynomial-kernel MMD^2 (degree 3, gamma 1/D, coef 1)."""
    from torchmetrics.image.kid import poly_mmd

    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    r, f = torch.from_numpy(np.asarray(real, np.float64)), torch.from_numpy(np.asarray(fake, np.float64))
    values = []
    for _ in range(subsets):
        a = torch.from_numpy(rng.choice(len(r), size, replace=False))
        b = torch.from_numpy(rng.choice(len(f), size, replace=False))
        values.append(float(poly_mmd(r[a], f[b])))
    return float(np.mean(values)), float(np.std(values))


def prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` with k-NN balls (``prdc`` package);
    k is capped at the smaller set's size - 2, the largest the package takes (the value used is returned as ``k``)."""
    import contextlib
    import io

    from prdc import compute_prdc

    k = min(k, len(real) - 2, len(fake) - 2)
    if k < 1:
        raise ValueError(f"precision/recall need at least 3 samples in each set, got {len(real)} and {len(fake)}")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
        values = compute_prdc(np.asarray(real, np.float32), np.asarray(fake, np.float32), nearest_k=k)
    return {**{key: float(v) for key, v in values.items()}, "k": int(k)}


def nearest(reference: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of every query's nearest reference row (Euclidean; the k-NN search of pairing)."""
    from ltaug.method.pairing import nearest as k_nearest

    if len(queries) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    index, distance = k_nearest(np.asarray(queries, np.float32), np.asarray(reference, np.float32), 1)
    return distance[:, 0].astype(np.float64), index[:, 0]


def memorisation_threshold(reference_distances: np.ndarray, percentile: float) -> float:
    """The ``percentile``-th percentile of the real test images' nearest-training-image distances."""
    return float(np.percentile(np.asarray(reference_distances, np.float64), percentile))


# ---------------------------------------------------------------------------- features


# ---------------------------------------------------------------------------- the stage


def real_features(
    manifest: pd.DataFrame, model_path: str | Path, cfg: FidConfig, image_size: int, device: torch.device,
    path: str | Path, source: str = "the manifest", stores: ImageStores | None = None,
) -> None:  # fmt: skip
    """Stage real_features: features of every training image, and of a seeded subset of
    ``cfg.memorisation_reference`` test images their nearest training image and its distance
    (the reference distribution of memorisation), as .npz at ``path``. Images are read a batch at a
    time from ``stores`` (None: the files): memory O(batch) plus the (N, D) features."""
    from ltaug.common.io import atomic_path

    space = FeatureSpace(model_path, cfg, image_size, device, stores, source)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if len(train) == 0 or len(test) < 2:
        raise InputError(f"{source}: memorisation needs training images and at least 2 test images "
                         f"({len(train)} train, {len(test)} test).")  # fmt: skip
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(test), min(cfg.memorisation_reference, len(test)), replace=False))
    test = test.iloc[pick].reset_index(drop=True)
    train_feats, _ = space.real(train)
    test_feats, _ = space.real(test)
    distance, which = nearest(train_feats, test_feats)
    print(f"{len(train)} training and {len(test)} reference test images in {space.name}; test-to-train distance "
          f"median {np.median(distance):.3f}, {cfg.memorisation_percentile}th percentile "
          f"{memorisation_threshold(distance, cfg.memorisation_percentile):.3f}", file=sys.stderr)  # fmt: skip
    def text(column: pd.Series) -> np.ndarray:  # a unicode array: the file loads without pickle
        return np.asarray(column.astype(str).tolist(), dtype=str)

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, train_ids=text(train["id"]), train_paths=text(train["path"]), train_features=train_feats,
                 reference_ids=text(test["id"]), reference_distances=distance, reference_nearest=which,
                 features=np.asarray(space.name))  # fmt: skip


def _load_real_features(path: str | Path, space: FeatureSpace) -> dict:
    if not Path(path).is_file():
        raise InputError(f"{path}: no training-image features here; run rule real_features first.")
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    if str(data["features"]) != space.name:
        raise InputError(f"{path}: features of {data['features']}, but this run measures in {space.name}; rerun "
                         f"rule real_features.")  # fmt: skip
    return data


def evaluate_set(
    synthetic: SyntheticSet, manifest: pd.DataFrame, split: ClassSplit, model_path: str | Path, cfg: FidConfig,
    image_size: int, device: torch.device, real_features_path: str | Path, detector: Detector | None = None,
    source: str = "the manifest", stores: ImageStores | None = None,
) -> dict:  # fmt: skip
    """FD (or FID), KID and PRDC per tail class between the set's samples of that class and the real images
    of the class in ``cfg.real_splits``; memorisation against the training images of ``real_features_path``;
    novelty (:mod:`ltaug.evaluation.novelty`, against the training images' pixels at the judge's size, read from the
    training split's image store, and the training features; measured only with ``stores``);
    label fidelity by the judge and, with a ``detector``, detector fidelity on the samples made for each class
    and its false-positive rate on the samples made for the other tail classes, with bootstrap intervals. Real
    images come from ``stores`` (the stores of decode_images; None: the image files)."""
    from ltaug.evaluation.detector import rate_intervals
    from ltaug.evaluation.novelty import SOURCE_COLUMNS, gray_vectors, set_novelty

    classes, tail = split.classes, split.tail
    space = FeatureSpace(model_path, cfg, image_size, device, stores, source)
    judge = space.judge
    train = _load_real_features(real_features_path, space)
    threshold = memorisation_threshold(train["reference_distances"], cfg.memorisation_percentile)
    real_rows = manifest[manifest["split"].isin(cfg.real_splits)].reset_index(drop=True)
    train_rows = manifest[manifest["split"] == "train"].reset_index(drop=True)
    if train_rows["id"].astype(str).tolist() != [str(i) for i in train["train_ids"]]:
        raise InputError(f"{real_features_path}: its training images are not those of {source}; rerun real_features.")
    fake_rows = synthetic.frame
    fake_paths = synthetic.paths()
    columns = [c for c in SOURCE_COLUMNS if c in fake_rows.columns]
    per_class, closest, pixels, features, sources = {}, [], {}, {}, {}
    hits, false_hits = {}, {}
    for t, name in enumerate(tail):
        real = real_rows[real_rows[name] == 1]
        fake_idx = np.flatnonzero(fake_rows["tail_class"].to_numpy() == name)
        if len(real) < 2:
            raise InputError(
                f"{source}: tail class {name!r} has {len(real)} real image(s) in the split(s) "
                f"{', '.join(cfg.real_splits)} (eval.fid.real_splits); a distance needs at least 2. Add splits to "
                f"eval.fid.real_splits (e.g. train) or images of the class."
            )
        fake_where = [f"{synthetic.root / 'manifest.csv'}, id {fake_rows['dicom_id'].iloc[i]!r}" for i in fake_idx]
        batches = []
        fake_feats, fake_scores = space([fake_paths[i] for i in fake_idx], fake_where, lambda _, b: batches.append(b))
        pixels[name], features[name] = gray_vectors(np.concatenate(batches) if batches else []), fake_feats
        sources[name] = {c: fake_rows[c].iloc[fake_idx].astype(str).tolist() for c in columns}
        real_feats, real_scores = space.real(real)
        kid, kid_std = kernel_distance(real_feats, fake_feats, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed + t)
        if min(len(real_feats), len(fake_feats)) >= 3:
            quality = prdc(real_feats, fake_feats, cfg.prdc_k)
        else:  # k-NN balls need 3 samples a side: left undefined (and out of the averages), not guessed
            quality = {"precision": np.nan, "recall": np.nan, "density": np.nan, "coverage": np.nan, "k": 0}
            print(f"{synthetic.method}: {name}: {len(real)} real, {len(fake_idx)} generated: too few for "
                  f"precision/recall (3 a side)", file=sys.stderr)  # fmt: skip
        distance, which = nearest(train["train_features"], fake_feats)
        k = classes.index(name)
        entry = {
            "n_real": int(len(real)),
            "n_generated": int(len(fake_idx)),
            "fd": feature_frechet_distance(real_feats, fake_feats),
            "kid": kid,
            "kid_std": kid_std,
            **{key: quality[key] for key in ("precision", "recall", "density", "coverage")},
            "prdc_k": quality["k"],
            "memorised": float(np.mean(distance < threshold)),
            "nearest_train_distance_median": float(np.median(distance)),
            "label_fidelity": label_fidelity(fake_scores[:, k], judge.meta["thresholds"][name]),
            "label_rate_real": label_fidelity(real_scores[:, k], judge.meta["thresholds"][name]),
            "threshold": judge.meta["thresholds"][name],
        }
        for j in np.argsort(distance, kind="stable")[: cfg.memorisation_pairs]:
            closest.append({"tail_class": name, "synthetic_id": str(fake_rows["dicom_id"].iloc[fake_idx[j]]),
                            "synthetic_path": fake_paths[fake_idx[j]], "train_id": str(train["train_ids"][which[j]]),
                            "train_path": str(train["train_paths"][which[j]]), "distance": float(distance[j])})  # fmt: skip
        if detector is not None and name in detector.classes:
            negative = np.flatnonzero((fake_rows["tail_class"].to_numpy() != name) & (fake_rows[name].to_numpy() == 0))
            hits[name] = detector.hits(name, [load_image(fake_paths[i], detector.image_size) for i in fake_idx])
            false_hits[name] = detector.hits(name, [load_image(fake_paths[i], detector.image_size) for i in negative])
            unseen = real[real["split"] != detector.classes[name]["fitted_on"]]  # not the images it was fitted on
            if len(unseen):
                entry["detector_rate_real"] = float(np.mean(detector.hits(name, read_images(unseen, detector.image_size, stores, source))))
        per_class[name] = entry
        print(f"{synthetic.method}: {name}: {cfg.metric} {entry['fd']:.2f}, KID {kid:.4f}, precision "
              f"{entry['precision']:.3f}, recall {entry['recall']:.3f}, memorised {entry['memorised']:.3f}, label "
              f"fidelity {entry['label_fidelity']:.3f} ({len(fake_idx)} generated, {len(real)} real)", file=sys.stderr)  # fmt: skip
    if stores is not None:
        train_pixels = stores.array("train", judge.size, train_rows["id"].astype(str).tolist(), source)
        class_rows = {name: np.flatnonzero(train_rows[name].to_numpy() == 1) for name in tail}
        found = set_novelty(pixels, features, sources, class_rows, train["train_features"], train_pixels,
                            train["train_ids"])  # fmt: skip
        for name, novelty in found.items():
            if "example" in novelty:
                i = np.flatnonzero(fake_rows["tail_class"].to_numpy() == name)[novelty["example"]["index"]]
                novelty["example"] |= {"synthetic_path": fake_paths[i],
                                       "nearest_path": str(train["train_paths"][list(train["train_ids"]).index(novelty["example"]["nearest_id"])])}  # fmt: skip
            per_class[name]["novelty"] = novelty
            print(f"{synthetic.method}: {name}: new {novelty['pixels']['new']:.2f} (pixels) / "
                  f"{novelty['features']['new']:.2f} (features), median ratio {novelty['pixels']['median_ratio']:.2f}, "
                  f"nearest training image its own source {novelty.get('own_source', float('nan')):.2f}", file=sys.stderr)  # fmt: skip
    detector_summary = None
    if hits:
        fidelity = rate_intervals(hits, seed=cfg.seed)
        fpr = rate_intervals(false_hits, seed=cfg.seed + 1)
        for name in hits:
            per_class[name]["detector_fidelity"] = fidelity[name]["rate"]
            per_class[name]["detector_fidelity_interval"] = [fidelity[name]["lo"], fidelity[name]["hi"]]
            per_class[name]["detector_fpr_synthetic"] = fpr[name]["rate"]
            per_class[name]["detector_negatives_synthetic"] = int(len(false_hits[name]))
        detector_summary = {"fidelity": fidelity["mean"], "fpr_synthetic": fpr["mean"]}

    def avg(values) -> float | None:
        defined = [float(x) for x in values if x is not None and not np.isnan(x)]
        return float(np.mean(defined)) if defined else None

    novelty = [v["novelty"] for v in per_class.values() if "novelty" in v]
    return {
        "method": synthetic.method,
        "metric": cfg.metric,
        "features": space.name,
        "judge": judge.name,
        "real_splits": list(cfg.real_splits),
        "config": asdict(cfg),
        "memorisation": {"threshold": threshold, "percentile": cfg.memorisation_percentile,
                         "reference": int(len(train["reference_distances"])), "train": int(len(train["train_ids"])),
                         "closest": sorted(closest, key=lambda c: c["distance"])[: cfg.memorisation_pairs]},  # fmt: skip
        "per_class": per_class,
        **{f"avg_tail_{key}": avg(v[key] for v in per_class.values())
           for key in ("fd", "kid", "precision", "recall", "density", "coverage")},  # fmt: skip
        "avg_memorised": avg(v["memorised"] for v in per_class.values()),
        "avg_label_fidelity": avg(v["label_fidelity"] for v in per_class.values()),
        "avg_detector_fidelity": avg(v.get("detector_fidelity") for v in per_class.values()),
        "detector": detector_summary,
        "novelty": ({f"{space}_{key}": avg(n[space][key] for n in novelty) for space in ("pixels", "features")
                     for key in ("new", "median_ratio")} | {"own_source": avg(n.get("own_source") for n in novelty)}
                    if novelty else None),  # fmt: skip
    }

