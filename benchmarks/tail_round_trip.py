"""How much of each demo tail finding survives the VAE and the IL round trips, per setting.

Needs a finished demo run (results/, data/demo/). For each variant of the demo VAE
(``--vae '{"vae_channels": [32, 32, 64, 64]}'``) or of the IL config (``--il '{"interaction_epochs": 12}'``)
it trains that part alone on the demo's training images or latents and scores, with the demo's
finding detector (results/eval/detector.json), decode(encode(x)) or decode(D(S(z))) of every
training tail image. A VAE variant is encoded as encode_latents encodes the train split
(``latents.mode`` and ``latents.seed``: the same seeded posterior draw of every image), so its
``hit_rate`` is the one the fidelity funnel's `vae` row would show for that VAE; ``hit_rate_mean``
scores the posterior means beside it. Results go to results.jsonl in ``--out``
(benchmarks/tail_round_trip), one line per variant, with the training time; an IL variant's model
goes to il-<hash>/ there.

    python benchmarks/tail_round_trip.py --il '{}' --il '{"interaction_epochs": 12, "lam": 0.95}'
    python benchmarks/tail_round_trip.py --vae '{}' --vae '{"vae_channels": [32, 32, 64, 64]}'
    python benchmarks/tail_round_trip.py --score-vae results/diffusion/model  # a trained VAE, as the funnel sees it
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ltaug.backbone.bootstrap import load_images
from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.bootstrap_models import build_vae
from ltaug.backbone.bootstrap_training import to_pixels, train_vae
from ltaug.backbone.latents import decode_latents, encode_images, open_latents, split_seed
from ltaug.backbone.model_dir import load_vae
from ltaug.common.config import validate_config
from ltaug.data.classes import read_classes
from ltaug.data.image_store import ImageStores
from ltaug.data.manifest import read_manifest
from ltaug.evaluation.detector import Detector
from ltaug.evaluation.funnel import gray
from ltaug.method.checkpoint import load_il_model
from ltaug.method.iterated import ILConfig
from ltaug.method.train_il import train_iterated

OUT = Path(__file__).parent / "tail_round_trip"


def train_images(config: dict, results: Path):
    manifest = read_manifest(results / "data/manifest.csv")
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)  # the rows of the train store, in order
    return train, load_images(train, config["latents"]["image_size"], ImageStores(results / "images"), "manifest.csv")


def vae_variant(variant: dict, config: dict, results: Path, detector: Detector, split) -> dict:
    train, images = train_images(config, results)
    cfg = BootstrapConfig(**{**config["diffusion"]["bootstrap"], "image_size": config["latents"]["image_size"], **variant})
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg)
    start = time.perf_counter()
    train_vae(vae, images, train[split.classes].to_numpy(), cfg, torch.device("cpu"))
    seconds = time.perf_counter() - start
    return {"part": "vae", "variant": variant, "train_seconds": seconds, **score_vae(vae, train, images, config, detector, split)}


def trained_vae(model_dir: str, config: dict, results: Path, detector: Detector, split) -> dict:
    train, images = train_images(config, results)
    vae = load_vae(model_dir, torch.device("cpu"))
    scores = score_vae(vae, train, images, config, detector, split)
    return {"part": "vae", "variant": {"model": model_dir}, "train_seconds": 0.0, **scores}


@torch.no_grad()
def score_vae(vae, train: pd.DataFrame, images: torch.Tensor, config: dict, detector: Detector, split) -> dict:
    """Hit rates of decode(encode(x)) per tail class: x encoded as encode_latents encodes the train
    split (``hit_rate``, image i's draw seeded by its row), and as the posterior mean (``hit_rate_mean``)."""
    mode, seed = config["latents"]["mode"], split_seed(config["latents"]["seed"], "train")
    rates, rates_mean = {}, {}
    for name in split.tail:
        rows = np.flatnonzero(train[name].to_numpy())
        x = to_pixels(images[rows], torch.device("cpu"))
        z = torch.cat([encode_images(vae, x[i : i + 1], mode, seed, int(row)) for i, row in enumerate(rows)])
        rates[name] = detector.rate(name, gray(decode_latents(vae, z)))
        rates_mean[name] = detector.rate(name, gray(decode_latents(vae, encode_images(vae, x, "mean", seed, 0))))
    return {"hit_rate": rates, "hit_rate_mean": rates_mean}


def il_variant(variant: dict, config: dict, results: Path, detector: Detector, split, out: Path = OUT) -> dict:
    cfg = ILConfig(**{**config["il"], **variant, "threads": torch.get_num_threads()})
    outdir = out / f"il-{abs(hash(json.dumps(variant, sort_keys=True)))}"
    start = time.perf_counter()
    train_iterated(results / "latents/train.zarr", results / "latents/val.zarr", split, outdir, cfg,
                   torch.device("cpu"), resume=False)  # fmt: skip
    seconds = time.perf_counter() - start
    il, vae = load_il_model(outdir / "model.pt"), load_vae(results / "diffusion/model", torch.device("cpu"))
    latents, rates = open_latents(results / "latents/train.zarr"), {}
    for name in split.tail:
        z = torch.from_numpy(latents["z"].oindex[np.flatnonzero(latents["labels"][:, split.classes.index(name)])])
        with torch.no_grad():
            rates[name] = detector.rate(name, gray(decode_latents(vae, il.model.decoder(il.model.student(z)))))
    last = il_history_last(outdir)
    return {"part": "il", "variant": variant, "train_seconds": seconds, "hit_rate": rates, **last}


def il_history_last(outdir: Path) -> dict:
    row = pd.read_csv(outdir / "history.csv").iloc[-1]
    return {"val_map_tail": float(row["val_map_tail"]), "val_recon_mse": float(row["val_recon_mse"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="a finished demo run's results directory")
    parser.add_argument("--config", default="config.yaml", help="the demo config the variants start from")
    parser.add_argument("--vae", action="append", default=[], help="JSON of diffusion.bootstrap keys to change")
    parser.add_argument("--score-vae", action="append", default=[], help="a diffusers model directory whose VAE to score")
    parser.add_argument("--il", action="append", default=[], help="JSON of il keys to change")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=str(OUT), help="directory of results.jsonl and the IL variants' models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    config = validate_config(yaml.safe_load(Path(args.config).read_text()), source=args.config)  # the schema's defaults too
    detector, split = Detector.load(results / "eval/detector.json"), read_classes(results / "data/classes.json")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(trained_vae, v) for v in args.score_vae] + [(vae_variant, json.loads(v)) for v in args.vae]
    runs += [(functools.partial(il_variant, out=out), json.loads(v)) for v in args.il]
    for run, variant in runs:
        row = run(variant, config, results, detector, split)
        row["mean_hit_rate"] = float(np.mean(list(row["hit_rate"].values())))
        print(json.dumps(row), flush=True)
        with open(out / "results.jsonl", "a") as lines:
            lines.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
