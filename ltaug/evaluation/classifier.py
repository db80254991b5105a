"""Stage evaluate_classifier: a DenseNet trained on real plus synthetic images, scored on the test split.

Elberg, Parra, Petrache (arXiv 2405.01705), Sec. 4 / Table 1: a DenseNet121 is trained on
the real training images plus one method's synthetic set (none for the baseline), with the
same hyper-parameters and seeds for every method, and its mean average precision over the
head and over the tail classes is measured on a held-out test split.

Here: torchvision's DenseNet (DenseNet121 by default: growth rate 32, blocks 6-12-24-16, 64
stem features; smaller variants by config for CPU budgets), from scratch or from a local
weights file, trained for a fixed number of AdamW steps on batches drawn uniformly from
the pool (real training rows + synthetic rows), the step with the best validation mAP kept;
then per-class AP and AUROC (scikit-learn, :mod:`ltaug.common.metrics`) on the test split only.
Repeated for every seed in ``eval.classifier.seeds``: mean and standard deviation.

The first seed's selected model is saved; the baseline's (real data only) serves
evaluate_fid as feature extractor (FD-DenseNet) and as judge of label fidelity.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchvision.models import DenseNet

from ltaug.common.config import THREADS, config_section
from ltaug.common.errors import ConfigError, InputError
from ltaug.common.io import atomic_path
from ltaug.common.metrics import best_thresholds, mean_over, mean_std, per_class_ap, score_metrics
from ltaug.common.precision import resolve_precision, training_autocast
from ltaug.common.schedule import warmup_cosine_schedule
from ltaug.data.classes import ClassSplit
from ltaug.data.image_source import ImageSource, cache_decision
from ltaug.data.image_store import ImageStores
from ltaug.data.synthetic import SyntheticSet
from ltaug.evaluation.schemes import RebalancingConfig, Sampler, TrainingPool, check_scheme, logit_offsets, training_loss

DENSENET121 = {"growth_rate": 32, "block_config": [6, 12, 24, 16], "num_init_features": 64}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics, grayscale replicated to RGB


@config_section("eval.classifier", extra={"threads": THREADS})
@dataclass(frozen=True)
class ClassifierConfig:
    image_size: int = 224  # classifier input side: images resized (shorter side) and centre-cropped
    growth_rate: int = 32  # DenseNet growth rate (DenseNet121: 32)
    block_config: list[int] = field(default_factory=lambda: [6, 12, 24, 16])  # layers per dense block (DenseNet121)
    num_init_features: int = 64  # channels of the stem convolution (DenseNet121: 64)
    weights: str = ""  # local torchvision DenseNet121 state dict to start from; "" = from scratch, nothing downloaded
    steps: int = 3000  # AdamW steps, the same for every method whatever its pool size
    batch_size: int = 32  # images per step
    lr: float = 0.001  # peak learning rate (linear warm-up over 5% of the steps, then cosine decay)
    weight_decay: float = 0.0001  # AdamW weight decay
    eval_every: int = 250  # steps between validation passes; the step with the best val mAP is kept
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # one training per seed: mean and std are reported
    precision: str = "auto"  # auto | float32 | bfloat16: autocast of the training forward passes (ltaug.common.precision)
    cache_images: bool | str = "auto"  # true: every image in memory as uint8; false: read per batch; auto: see cache_decision
    threads: int = 2  # torch CPU threads and image-reading threads

    def __post_init__(self) -> None:  # types and ranges: the schema (ltaug.common.config.config_section)
        if self.weights and self.architecture() != DENSENET121:
            raise ConfigError(
                f"eval.classifier.weights: {self.weights} is a DenseNet121 file, but growth_rate, block_config and "
                f"num_init_features describe another DenseNet ({self.architecture()}); use DenseNet121's "
                f"{DENSENET121} or leave weights empty."
            )
        if self.weights and not Path(self.weights).is_file():
            raise ConfigError(
                f"eval.classifier.weights: {self.weights} does not exist; give a local DenseNet121 state dict "
                f"(e.g. torchvision's densenet121-a639ec97.pth) or leave it empty to train from scratch."
            )

    def architecture(self) -> dict:
        return {"growth_rate": self.growth_rate, "block_config": list(self.block_config),
                "num_init_features": self.num_init_features}  # fmt: skip

    def name(self) -> str:
        """DenseNet121, or DenseNet(k=12, blocks 2-4-4-4, stem 24) for another configuration."""
        if self.architecture() == DENSENET121:
            return "DenseNet121"
        blocks = "-".join(map(str, self.block_config))
        return f"DenseNet(k={self.growth_rate}, blocks {blocks}, stem {self.num_init_features})"


@config_section("eval.judge")
@dataclass(frozen=True)
class JudgeConfig:
    balance: float = 1.0  # class balancing of the judge's batches: 0 = image frequency, 1 = every class equally often
    seed: int = 0  # seed of its weights and batches


# ---------------------------------------------------------------------------- model


def build_densenet(cfg: ClassifierConfig, num_classes: int) -> DenseNet:
    """torchvision's DenseNet with ``num_classes`` outputs, optionally from ``cfg.weights`` (classifier re-initialised)."""
    model = DenseNet(num_classes=num_classes, **cfg.architecture())
    if cfg.weights:
        state = torch.load(cfg.weights, map_location="cpu", weights_only=True)
        pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
        state = {pattern.sub(r"\1\2", k): v for k, v in state.items()}  # old torchvision key names, as it fixes them
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise InputError(
                f"{cfg.weights}: not a DenseNet121 state dict (unexpected keys {unexpected[:3]}, missing "
                f"{[k for k in missing if not k.startswith('classifier.')][:3]}); give torchvision's densenet121 weights."
            )
    return model


def embed(model: DenseNet, x: torch.Tensor) -> torch.Tensor:
    """(B, D) penultimate features: DenseNet.forward up to the classifier (D = 1024 for DenseNet121)."""
    features = F.relu(model.features(x))
    return torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, S, S) -> float (B, 3, S, S) with ImageNet statistics (grayscale replicated), channels-last
    in memory as the DenseNet's weights are (the same values; see ``to_device``)."""
    x = images.float().div(255).expand(-1, 3, -1, -1)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def to_device(model: DenseNet, device: torch.device) -> DenseNet:
    """``model`` on ``device`` with channels-last weights: the same function, and its convolutions run
    about 1.2x faster on the CPU (benchmarks/memory_format.py) and on CUDA's tensor cores."""
    return model.to(device, memory_format=torch.channels_last)


def save_classifier(path: str | Path, model: DenseNet, meta: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), **meta}, tmp)


def load_classifier(path: str | Path, device: torch.device) -> tuple[DenseNet, dict]:
    """A model saved by evaluate_classifier, in eval mode on ``device``, and its metadata."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no classifier here; run evaluate_classifier for the baseline first.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ClassifierConfig(**{**saved["config"], "weights": ""})
    model = DenseNet(num_classes=len(saved["classes"]), **cfg.architecture())
    model.load_state_dict(saved.pop("state_dict"))
    return to_device(model, device).eval(), saved


# ---------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict(model: DenseNet, source: ImageSource, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """(N, K) float64 sigmoid scores of every image of ``source``, in order."""
    model.eval()
    out = []
    for start in range(0, len(source), batch_size):
        x = normalise(source.batch(range(start, min(start + batch_size, len(source)))).to(device))
        out.append(torch.sigmoid(model(x)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.classifier.out_features))


# ---------------------------------------------------------------------------- training


def train_classifier(
    train: ImageSource, pool: TrainingPool, val: ImageSource, val_labels: np.ndarray, classes: Sequence[str],
    cfg: ClassifierConfig, seed: int, device: torch.device, scheme: str = "plain",
    rebalancing: RebalancingConfig = RebalancingConfig(), balance: float = 1.0,
) -> tuple[DenseNet, dict]:  # fmt: skip
    """Train a DenseNet for ``cfg.steps`` steps on ``train`` (the images of ``pool``'s rows, real then synthetic)
    under ``scheme``; return the model of the step with the best validation mAP (over the classes with a
    validation positive) and {best_step, val_map, history}.

    Batches come from :class:`ltaug.evaluation.schemes.Sampler` (plain: shuffled passes; balanced: class-balanced
    draws, ``balance`` 1 = every class equally often, a share of each tail class's draws from its synthetic rows;
    logit-adjusted: passes with the logit-adjusted loss), drawn from a generator seeded by ``seed``, as are the
    weights: the same seed gives the same model for the same data on the same device and threads.
    """
    torch.manual_seed(seed)
    precision = resolve_precision(cfg.precision, device, "eval.classifier.precision")
    model = to_device(build_densenet(cfg, len(classes)), device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = warmup_cosine_schedule(optimiser, cfg.steps)
    generator = torch.Generator().manual_seed(seed)
    sampler = Sampler(scheme, pool, cfg.batch_size, generator, rebalancing.synthetic_share, balance)
    offsets = logit_offsets(sampler.prior(), rebalancing.tau) if scheme == "logit-adjusted" else None
    weights = None
    if pool.n_synthetic and rebalancing.synthetic_weight != 1:
        weights = torch.ones(len(pool.labels))
        weights[pool.n_real :] = rebalancing.synthetic_weight
    targets = torch.from_numpy(np.asarray(pool.labels, dtype=np.float32))
    best = {"val_map": -math.inf, "best_step": 0, "state": None}
    history, losses, drawn = [], [], 0
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        rows = sampler()
        drawn += int((rows >= pool.n_real).sum())
        model.train()
        x = normalise(train.batch(rows.numpy()).to(device))
        with training_autocast(precision, device):
            logits = model(x)
        loss = training_loss(logits.float(), targets[rows].to(device), None if weights is None else weights[rows], offsets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_map = mean_over(per_class_ap(val_labels, predict(model, val, device), classes), classes)
            history.append({"step": step, "loss": float(np.mean(losses)), "val_map": val_map})
            print(f"  seed {seed} step {step}: loss {np.mean(losses):.4f}, val mAP {val_map:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)  # fmt: skip
            losses = []
            if val_map > best["val_map"]:
                best = {"val_map": val_map, "best_step": step, "state": copy.deepcopy(model.state_dict())}
    model.load_state_dict(best["state"])
    share = drawn / (cfg.steps * cfg.batch_size)
    return model.eval(), {"best_step": best["best_step"], "val_map": best["val_map"], "history": history,
                          "synthetic_draw_share": share, "precision": precision}  # fmt: skip


# ---------------------------------------------------------------------------- the stage


def check_provenance(synthetic: SyntheticSet, manifest: pd.DataFrame) -> None:
    """No synthetic sample may come from a validation or test image (that would leak them into training), nor from
    the oracle's held-out images (split holdout), which the oracle's set alone may hold."""
    held_out = dict(zip(manifest["id"].astype(str), manifest["split"]))
    allowed = {"train", "holdout"} if synthetic.method == "oracle" else {"train"}
    for column in synthetic.info.get("provenance_columns") or synthetic.frame.columns:
        if column not in synthetic.frame.columns or column in ("tail_class", "dicom_id", "path"):
            continue
        values = synthetic.frame[column].astype(str)
        leaked = [(i, v, held_out[v]) for i, v in enumerate(values) if held_out.get(v, "train") not in allowed]
        if leaked:
            i, v, split = leaked[0]
            raise InputError(
                f"{synthetic.root / 'manifest.csv'} line {i + 2}: column {column!r} names {v!r}, an image of the "
                f"{split} split ({len(leaked)} such rows); synthetic samples must be made from training images only, "
                f"or the {split} split leaks into training. Rebuild the set from the training split."
            )


def evaluate_method(
    method: str, manifest: pd.DataFrame, split: ClassSplit, synthetic: Sequence[SyntheticSet] | None,
    cfg: ClassifierConfig, device: torch.device, stores: ImageStores | None = None, source: str = "the manifest",
    scheme: str = "plain", rebalancing: RebalancingConfig = RebalancingConfig(), balance: float = 1.0,
) -> tuple[dict, DenseNet, dict]:  # fmt: skip
    """Train on real train rows (+ a draw of a synthetic set) under ``scheme``, select on val, score on test, for
    every seed.

    ``synthetic`` holds the draws of one set: seed i (the i-th of ``cfg.seeds``) trains with draw i, so the
    intervals hold the set's own randomness as well as the classifier's; one draw serves every seed. Real images
    come from ``stores`` (the stores of decode_images at ``cfg.image_size``; None: the image files), a synthetic
    set's from its files.

    Returns (results, the first seed's model, its metadata, the test scores). Only test rows
    are scored; the results record how many rows of which split each phase used and a hash of
    the test ids. The test scores ({ids, labels, classes, seeds, scores (S, N, K) float64, the
    numbers the metrics were computed from}) are what the bootstrap of Table 1 resamples
    (:func:`write_scores`).
    """
    check_scheme(scheme, rebalancing)
    classes = split.classes
    parts = {s: manifest[manifest["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    for s, rows in parts.items():
        if len(rows) == 0:
            raise InputError(f"{source}: no rows of the {s} split; evaluation needs train, val and test images.")
    draws = list(synthetic or [])
    if draws and len(draws) not in (1, len(cfg.seeds)):
        raise InputError(f"{method}: {len(draws)} draws of its set for {len(cfg.seeds)} classifier seeds; give one draw "
                         f"for every seed (eval.draw_per_seed: true) or one for all.")  # fmt: skip
    for draw in draws:
        check_provenance(draw, manifest)
    real_labels = parts["train"][classes].to_numpy(dtype=np.uint8)
    start = time.perf_counter()
    n_images = len(parts["train"]) + sum(len(d.frame) for d in draws) + len(parts["val"]) + len(parts["test"])
    cache, why = cache_decision(cfg.cache_images, n_images, cfg.image_size)
    print(why, file=sys.stderr)
    real = ImageSource(cfg.image_size, cache, cfg.threads, stores, parts["train"])
    val = ImageSource(cfg.image_size, cache, cfg.threads, stores, parts["val"])
    test = ImageSource(cfg.image_size, cache, cfg.threads, stores, parts["test"])
    n_synthetic = len(draws[0].frame) if draws else 0
    print(f"{method} ({scheme}): {len(real)} real training images + {n_synthetic} synthetic "
          f"({len(draws)} draw(s)), {len(val)} val, {len(test)} test, read in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)  # fmt: skip
    val_labels = parts["val"][classes].to_numpy(dtype=np.uint8)
    test_labels = parts["test"][classes].to_numpy(dtype=np.uint8)

    runs, first, test_scores, sources = [], None, [], {}
    for i, seed in enumerate(cfg.seeds):
        d = i if len(draws) > 1 else 0
        if draws and d not in sources:  # the real images read once, each draw's files added to them
            frame = draws[d].frame
            where = [f"{draws[d].root / 'manifest.csv'}, id {j!r}" for j in frame["dicom_id"]]
            sources = {d: (real.extended(draws[d].paths(), where), draws[d])}
        train, drawn = sources[d] if draws else (real, None)
        if drawn is None:
            pool = TrainingPool(real_labels, len(real_labels), np.zeros(0, dtype=np.int64))
        else:
            made_for = drawn.frame["tail_class"].map(list(classes).index).to_numpy(dtype=np.int64)
            pool = TrainingPool(np.concatenate([real_labels, drawn.labels(classes)]), len(real_labels), made_for)
        model, info = train_classifier(train, pool, val, val_labels, classes, cfg, seed, device, scheme, rebalancing,
                                       balance)  # fmt: skip
        scores = predict(model, test, device)
        test_scores.append(scores)
        run = {"seed": seed, "draw": str(drawn.root) if drawn else None,
               **score_metrics(test_labels, scores, classes, split.head, split.tail), **info}  # fmt: skip
        runs.append(run)
        print(f"{method} seed {seed}: head mAP {run['map_head']:.4f}, tail mAP {run['map_tail']:.4f}, "
              f"macro AUROC {run['auroc_macro']:.4f} (best step {info['best_step']}, synthetic share of the draws "
              f"{info['synthetic_draw_share']:.3f})", file=sys.stderr)  # fmt: skip
        if first is None:
            thresholds = best_thresholds(val_labels, predict(model, val, device), classes)
            first = (model, {"config": asdict(cfg), "classes": classes, "head": split.head, "tail": split.tail,
                             "seed": seed, "best_step": info["best_step"], "thresholds": thresholds,
                             "method": method})  # fmt: skip
    mean, std = mean_std(runs)
    results = {
        "method": method,
        "scheme": scheme,
        "rebalancing": asdict(rebalancing) if scheme != "plain" or n_synthetic else None,
        "classifier": cfg.name(),
        "config": asdict(cfg),
        "seeds": list(cfg.seeds),
        "draws": [str(d.root) for d in draws],
        "classes": classes,
        "head": split.head,
        "tail": split.tail,
        "scored_split": "test",
        "n": {"train_real": len(parts["train"]), "synthetic": n_synthetic, "val": len(parts["val"]),
              "test": len(parts["test"])},  # fmt: skip
        "test_positives": {c: int(v) for c, v in zip(classes, test_labels.sum(axis=0))},
        "test_ids_sha256": hashlib.sha256("\n".join(parts["test"]["id"].astype(str)).encode()).hexdigest(),
        "mean": mean,
        "std": std,
        "runs": runs,
    }
    scores = {"ids": np.asarray(parts["test"]["id"].astype(str).tolist(), dtype=str), "labels": test_labels, "classes": np.asarray(classes),
              "seeds": np.asarray(cfg.seeds), "scores": np.stack(test_scores)}  # fmt: skip
    return results, first[0], first[1], scores


def train_judge(
    manifest: pd.DataFrame, split: ClassSplit, cfg: ClassifierConfig, judge: JudgeConfig, device: torch.device,
    model_path: str | Path, results_path: str | Path, stores: ImageStores | None = None, source: str = "the manifest",
) -> dict:  # fmt: skip
    """Stage train_judge: the classifier every synthetic set is judged by, a DenseNet of ``cfg`` trained on the real
    training images alone with class-balanced batches (``judge.balance``; 0: plain passes), one seed; saved as
    evaluate_classifier saves a model (its validation thresholds included), with its test metrics beside it."""
    cfg = dataclasses.replace(cfg, seeds=[judge.seed])
    scheme = "balanced" if judge.balance > 0 else "plain"
    results, model, meta, _ = evaluate_method("judge", manifest, split, None, cfg, device, stores, source, scheme,
                                              balance=judge.balance)  # fmt: skip
    save_classifier(model_path, model, {**meta, "balance": judge.balance})
    write_results(results_path, results)
    return results


def write_scores(path: str | Path, scores: dict) -> None:
    """The test scores of every seed as .npz: what compare_methods resamples for intervals and paired differences."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **scores)


def write_results(path: str | Path, results: dict) -> None:
    """JSON with NaN written as null (undefined AP of a class without test positives)."""
    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(clean(results), indent=2) + "\n")
