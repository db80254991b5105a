"""Stage evaluate_fid: Frechet and kernel distances per tail class, and label fidelity of a synthetic set.

Elberg, Parra, Petrache (arXiv 2405.01705), Table 1 reports the FID between the generated
images of each tail class and that class's real images, averaged over the tail classes
("Avg Tail FID"). The Frechet distance between Gaussians fitted to two feature sets is

    FD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))        (Heusel et al. 2017, Eq. 6)

FID uses InceptionV3 pool features; they come from torchmetrics (torch-fidelity's
InceptionV3) and only from a local weights file (``eval.fid.inception_weights``): nothing is
downloaded. Without one, the features are the penultimate layer of the DenseNet trained on
real data only (the baseline of evaluate_classifier), and the column is called FD-DenseNet,
so that nobody mistakes it for Inception FID. KID (Binkowski et al. 2018: unbiased MMD^2
with the cubic polynomial kernel, torchmetrics' ``poly_mmd``, averaged over random subsets)
is given beside it, since it suits the small sets of tail classes.

Label fidelity (:mod:`ltaug.fidelity`) comes from the same forward pass of that classifier.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltaug.data import SPLITS, ClassSplit
from ltaug.errors import ConfigError, InputError
from ltaug.evaluate import ClassifierConfig, embed, load_classifier, load_image, normalise
from ltaug.fidelity import Detector, label_fidelity
from ltaug.images import open_image
from ltaug.latents import preprocess
from ltaug.synthetic import SyntheticSet


@dataclass(frozen=True)
class FidConfig:
    inception_weights: str = ""  # local torch-fidelity InceptionV3 weights (pt_inception-2015-12-05); "" = FD-DenseNet
    real_splits: list[str] = field(default_factory=lambda: ["val", "test"])  # real images each tail class is compared with
    kid_subsets: int = 100  # random subsets KID is averaged over
    kid_subset_size: int = 1000  # samples per subset (capped at the smaller set's size)
    batch_size: int = 64  # images per forward pass
    seed: int = 0  # seed of the KID subsets
    threads: int = 2  # torch CPU threads

    def __post_init__(self) -> None:
        for key in ("kid_subsets", "kid_subset_size", "batch_size", "threads"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"eval.fid.{key}: {value!r} is not an integer >= 1.")
        bad = [s for s in self.real_splits if s not in SPLITS]
        if not self.real_splits or bad:
            raise ConfigError(f"eval.fid.real_splits: {self.real_splits!r}: give one or more of {', '.join(SPLITS)}.")
        if self.inception_weights and not Path(self.inception_weights).is_file():
            raise ConfigError(
                f"eval.fid.inception_weights: {self.inception_weights} does not exist; give a local copy of "
                f"torch-fidelity's InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth), or leave it "
                f"empty for the Frechet distance in the real-data DenseNet's features (FD-DenseNet)."
            )

    @property
    def metric(self) -> str:
        return "FID" if self.inception_weights else "FD-DenseNet"


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


# ---------------------------------------------------------------------------- features


class DenseNetFeatures:
    """Penultimate features and class scores of the real-data classifier, images at its input size."""

    def __init__(self, model_path: str | Path, device: torch.device):
        self.model, self.meta = load_classifier(model_path, device)
        self.size = self.meta["config"]["image_size"]
        self.device = device
        cfg = ClassifierConfig(**{**self.meta["config"], "weights": ""})
        self.name = f"{cfg.name()} trained on real data only ({self.meta['method']})"

    def images(self, paths: Sequence[str], where: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([load_image(p, self.size, w) for p, w in zip(paths, where)])[:, None])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) features and (N, K) sigmoid scores of uint8 (N, 1, S, S) images."""
        feats, scores = [], []
        for start in range(0, len(images), batch_size):
            f = embed(self.model, normalise(images[start : start + batch_size].to(self.device)))
            feats.append(f.double().cpu())
            scores.append(torch.sigmoid(self.model.classifier(f)).double().cpu())
        return torch.cat(feats).numpy(), torch.cat(scores).numpy()


class InceptionFeatures:
    """torchmetrics' InceptionV3 (torch-fidelity's FID network) from a local weights file: 2048-d pool features."""

    def __init__(self, weights: str, device: torch.device):
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            import torch_fidelity  # noqa: F401  (NoTrainInceptionV3 is built on it)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"eval.fid.inception_weights is set, but {exc.name} is not installed; install torch-fidelity "
                f"(pip install torch-fidelity==0.4.0) or leave eval.fid.inception_weights empty for FD-DenseNet."
            ) from exc
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=weights).to(device)  # fmt: skip
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int) -> np.ndarray:
        """(N, 2048) features of uint8 (N, 3, H, W) images (resized to 299 inside)."""
        out = [self.net(images[s : s + batch_size].to(self.device)).double().cpu() for s in range(0, len(images), batch_size)]
        return torch.cat(out).reshape(len(images), -1).numpy()


def _rgb(paths: Sequence[str], size: int, where: Sequence[str]) -> torch.Tensor:
    """uint8 (N, 3, S, S): encode_latents' resize and crop, so real and generated images match in size."""
    return torch.stack([((preprocess(open_image(p, w), size) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                        for p, w in zip(paths, where)])  # fmt: skip


# ---------------------------------------------------------------------------- the stage


def evaluate_set(
    synthetic: SyntheticSet, manifest: pd.DataFrame, split: ClassSplit, model_path: str | Path, cfg: FidConfig,
    image_size: int, device: torch.device, detector: Detector | None = None, source: str = "the manifest",
) -> dict:  # fmt: skip
    """FD (or FID) and KID per tail class between the set's samples of that class and the real images
    of the class in ``cfg.real_splits``; label fidelity (and, with a ``detector``, detector fidelity)."""
    classes, tail = split.classes, split.tail
    judge = DenseNetFeatures(model_path, device)
    inception = InceptionFeatures(cfg.inception_weights, device) if cfg.inception_weights else None
    real_rows = manifest[manifest["split"].isin(cfg.real_splits)].reset_index(drop=True)
    fake_rows = synthetic.frame
    fake_paths = synthetic.paths()
    per_class = {}
    for t, name in enumerate(tail):
        real = real_rows[real_rows[name] == 1]
        fake_idx = np.flatnonzero(fake_rows["tail_class"].to_numpy() == name)
        if len(real) < 2:
            raise InputError(
                f"{source}: tail class {name!r} has {len(real)} real image(s) in the split(s) "
                f"{', '.join(cfg.real_splits)} (eval.fid.real_splits); a distance needs at least 2. Add splits to "
                f"eval.fid.real_splits (e.g. train) or images of the class."
            )
        real_where = [f"{source}, id {i!r}" for i in real["id"]]
        fake_where = [f"{synthetic.root / 'manifest.csv'}, id {fake_rows['dicom_id'].iloc[i]!r}" for i in fake_idx]
        fake_images = judge.images([fake_paths[i] for i in fake_idx], fake_where)
        fake_feats, fake_scores = judge(fake_images, cfg.batch_size)
        real_feats, real_scores = judge(judge.images(real["path"].tolist(), real_where), cfg.batch_size)
        if inception is not None:
            real_feats = inception(_rgb(real["path"].tolist(), image_size, real_where), cfg.batch_size)
            fake_feats = inception(_rgb([fake_paths[i] for i in fake_idx], image_size, fake_where), cfg.batch_size)
        kid, kid_std = kernel_distance(real_feats, fake_feats, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed + t)
        k = classes.index(name)
        entry = {
            "n_real": int(len(real)),
            "n_generated": int(len(fake_idx)),
            "fd": feature_frechet_distance(real_feats, fake_feats),
            "kid": kid,
            "kid_std": kid_std,
            "label_fidelity": label_fidelity(fake_scores[:, k], judge.meta["thresholds"][name]),
            "label_rate_real": label_fidelity(real_scores[:, k], judge.meta["thresholds"][name]),
            "threshold": judge.meta["thresholds"][name],
        }
        if detector is not None:
            entry["detector_fidelity"] = detector.rate(name, [_gray(fake_paths[i]) for i in fake_idx])
            entry["detector_rate_real"] = detector.rate(name, [_gray(p) for p in real["path"]])
        per_class[name] = entry
        print(f"{synthetic.method}: {name}: {cfg.metric} {entry['fd']:.2f}, KID {kid:.4f}, label fidelity "
              f"{entry['label_fidelity']:.3f} ({len(fake_idx)} generated, {len(real)} real)", file=sys.stderr)  # fmt: skip

    def avg(key: str) -> float | None:
        values = [v[key] for v in per_class.values() if key in v]
        return float(np.mean(values)) if values else None

    return {
        "method": synthetic.method,
        "metric": cfg.metric,
        "features": "InceptionV3 pool3, torchmetrics" if inception is not None else f"{judge.name}, penultimate layer",
        "judge": judge.name,
        "real_splits": list(cfg.real_splits),
        "config": asdict(cfg),
        "per_class": per_class,
        "avg_tail_fd": avg("fd"),
        "avg_tail_kid": avg("kid"),
        "avg_label_fidelity": avg("label_fidelity"),
        "avg_detector_fidelity": avg("detector_fidelity"),
    }


def _gray(path: str) -> np.ndarray:
    return np.asarray(open_image(path).convert("L"))
