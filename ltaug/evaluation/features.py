"""The feature spaces in which evaluate_fid measures (config section eval.fid): InceptionV3's pool features from a local
weights file (FID proper), or the judge's penultimate DenseNet layer (FD-DenseNet); real images come from the image
stores, synthetic ones from their files, both as the same grayscale pixels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ltaug.backbone.latents import to_rgb_pixels
from ltaug.common.config import THREADS, config_section
from ltaug.common.errors import ConfigError
from ltaug.common.images import load_image
from ltaug.data.image_store import ImageStores, read_images
from ltaug.evaluation.classifier import ClassifierConfig, embed, load_classifier, normalise


@config_section("eval.fid", extra={"threads": THREADS})
@dataclass(frozen=True)
class FidConfig:
    inception_weights: str = ""  # local torch-fidelity InceptionV3 weights (pt_inception-2015-12-05); "" = FD-DenseNet
    real_splits: list[str] = field(default_factory=lambda: ["val", "test"])  # real images each tail class is compared with
    kid_subsets: int = 100  # random subsets KID is averaged over
    kid_subset_size: int = 1000  # samples per subset (capped at the smaller set's size)
    batch_size: int = 64  # images per forward pass
    seed: int = 0  # seed of the KID subsets and of the memorisation reference subset
    prdc_k: int = 5  # k of precision / recall / density / coverage (Naeem et al. 2020)
    memorisation_percentile: float = 5  # memorised: nearest training image closer than this percentile of real ones'
    memorisation_reference: int = 2000  # test images (a seeded subset when there are more) that set that threshold
    memorisation_pairs: int = 8  # closest synthetic-training pairs kept for the report
    threads: int = 2  # torch CPU threads

    def __post_init__(self) -> None:  # types and ranges: the schema (ltaug.common.config.config_section)
        if self.inception_weights and not Path(self.inception_weights).is_file():
            raise ConfigError(
                f"eval.fid.inception_weights: {self.inception_weights} does not exist; give a local copy of "
                f"torch-fidelity's InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth), or leave it "
                f"empty for the Frechet distance in the real-data DenseNet's features (FD-DenseNet)."
            )

    @property
    def metric(self) -> str:
        return "FID" if self.inception_weights else "FD-DenseNet"


class DenseNetFeatures:
    """Penultimate features and class scores of a classifier trained on real data (the judge), images at its input
    size."""

    def __init__(self, model_path: str | Path, device: torch.device):
        self.model, self.meta = load_classifier(model_path, device)
        self.size = self.meta["config"]["image_size"]
        self.device = device
        cfg = ClassifierConfig(**{**self.meta["config"], "weights": ""})
        balanced = ", class-balanced" if self.meta.get("balance") else ""
        self.name = f"{cfg.name()} trained on real data only{balanced} ({self.meta['method']})"

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
            import torch_fidelity  # noqa: F401  (NoTrainInceptionV3 is built on it)
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"eval.fid.inception_weights is set, but {exc.name} is not installed; install torch-fidelity "
                f"(pip install -e '.[fid]' in this checkout, or pip install torch-fidelity==0.4.0) or leave "
                f"eval.fid.inception_weights empty for FD-DenseNet."
            ) from exc
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=weights).to(device)  # fmt: skip
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int) -> np.ndarray:
        """(N, 2048) features of uint8 (N, 3, H, W) images (resized to 299 inside)."""
        out = [self.net(images[s : s + batch_size].to(self.device)).double().cpu() for s in range(0, len(images), batch_size)]
        return torch.cat(out).reshape(len(images), -1).numpy()


class FeatureSpace:
    """The features every distance of a run is measured in: InceptionV3 pool features with local weights, else the
    judge's penultimate layer; the judge's class scores always come with them. Images are read
    ``batch_size`` at a time, so memory is O(batch) plus the (N, D) features."""

    def __init__(self, model_path: str | Path, cfg: FidConfig, image_size: int, device: torch.device,
                 stores: ImageStores | None = None, source: str = "the manifest"):  # fmt: skip
        self.stores, self.source = stores, source  # real images: the stores of decode_images (None: the files)
        self.judge = DenseNetFeatures(model_path, device)
        self.inception = InceptionFeatures(cfg.inception_weights, device) if cfg.inception_weights else None
        self.batch_size, self.image_size, self.metric = cfg.batch_size, image_size, cfg.metric
        self.name = "InceptionV3 pool3, torchmetrics" if self.inception is not None else f"{self.judge.name}, penultimate layer"

    def __call__(
        self, paths: Sequence[str], where: Sequence[str], pixels: Callable[[int, np.ndarray], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) float32 features and (N, K) float64 class scores of the image files ``paths`` (a synthetic set);
        ``pixels(start, batch)`` receives every batch's (B, S, S) uint8 grayscale images at the judge's input size."""
        paths, where = list(paths), list(where)
        return self._features(len(paths), lambda a, b: self.judge.images(paths[a:b], where[a:b]),
                              lambda a, b: _rgb(paths[a:b], self.image_size, where[a:b]), pixels)  # fmt: skip

    def real(self, table: pd.DataFrame, pixels: Callable[[int, np.ndarray], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`__call__`, for the manifest rows ``table`` (id, split, path): real images, from the stores."""
        def gray(a: int, b: int) -> torch.Tensor:
            return torch.from_numpy(read_images(table.iloc[a:b], self.judge.size, self.stores, self.source))[:, None]

        def rgb(a: int, b: int) -> torch.Tensor:
            x = to_rgb_pixels(read_images(table.iloc[a:b], self.image_size, self.stores, self.source))
            return torch.from_numpy(x).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8

        return self._features(len(table), gray, rgb, pixels)

    def _features(self, n: int, gray: Callable[[int, int], torch.Tensor], rgb: Callable[[int, int], torch.Tensor],
                  pixels: Callable[[int, np.ndarray], None] | None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        feats, scores = [], []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            images = gray(start, stop)  # (B, 1, S, S) uint8
            if pixels is not None:
                pixels(start, images[:, 0].numpy())
            f, c = self.judge(images, self.batch_size)
            if self.inception is not None:
                f = self.inception(rgb(start, stop), self.batch_size)
            feats.append(f.astype(np.float32))
            scores.append(c)
        if not feats:
            return np.zeros((0, 0), np.float32), np.zeros((0, len(self.judge.meta["classes"])))
        return np.concatenate(feats), np.concatenate(scores)


def _rgb(paths: Sequence[str], size: int, where: Sequence[str]) -> torch.Tensor:
    """uint8 (N, 3, S, S): synthetic images as the real ones reach InceptionV3 (grayscale, repeated into three
    channels, at the latent size), so the two differ only in what they show."""
    gray = np.stack([load_image(p, size, w) for p, w in zip(paths, where)])
    return torch.from_numpy(to_rgb_pixels(gray)).permute(0, 3, 1, 2)
