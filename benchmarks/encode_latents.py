"""Throughput and peak memory of ``ltaug.backbone.latents.encode_split`` on N and 10 x N demo images (128x128).

    python benchmarks/encode_latents.py [--n 200] [--model DIR] [--threads 1] \
        [--out benchmarks/results/encode_latents.json]

Draws 10 x N demo images (``ltaug.data.demo.render_image``, with the demo's labels) into a
temporary directory, then encodes the first N and all 10 x N, each in a fresh subprocess
so that the two runs share no memory; each child reports its images/s and its peak RSS
(``ru_maxrss``) before and after encoding. The VAE is the one of ``--model`` (a diffusers
Stable Diffusion directory), else a seeded, untrained AutoencoderKL of the demo model's
size (block_out_channels 32, 64, 64, 64). Streaming means peak RSS at 10 x N stays within
1.3x of N; the JSON says whether it did.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

REQUIRED_RATIO = 1.3  # peak RSS at 10 x N over peak RSS at N


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def draw_images(root: Path, n: int) -> Path:
    """n demo training images as PNGs and their manifest.csv (id, path, split, one column per class)."""
    from ltaug.data.demo import FINDINGS, DemoConfig, class_names, draw_labels, render_image

    cfg = DemoConfig(n_train=n)
    labels = draw_labels(cfg, "train")  # (n, K)
    (root / "images").mkdir(parents=True)
    rows = []
    for i, row in enumerate(labels):
        pixels, _ = render_image(cfg, "train", i, [c for c, y in zip(FINDINGS, row) if y])
        path = root / "images" / f"bench-{i:06d}.png"
        Image.fromarray(pixels).save(path)
        rows.append({"id": path.stem, "path": str(path), "split": "train"})
    frame = pd.concat([pd.DataFrame(rows), pd.DataFrame(labels, columns=class_names())], axis=1)
    frame.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def child(args: argparse.Namespace) -> None:
    """One measurement, in its own process: encode the first ``--n`` rows, print a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL

    from ltaug.data.manifest import read_manifest
    from ltaug.backbone.latents import LatentsConfig, encode_split
    from ltaug.backbone.model_dir import load_vae

    if args.model:
        vae, model = load_vae(args.model, torch.device("cpu")), {"path": args.model, "fingerprint": "benchmark"}
    else:
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                            norm_num_groups=32, sample_size=128)  # fmt: skip
        model = {"path": "(untrained, demo size)", "fingerprint": "benchmark"}
    frame = read_manifest(args.manifest).head(args.n)
    cfg = LatentsConfig(image_size=128, batch_size=args.batch_size)
    before = _rss_mb()  # interpreter, torch, diffusers and the model
    start = time.perf_counter()
    encode_split(frame, "train", vae, args.store, cfg, model, "cpu")  # the PNGs themselves (stores=None)
    wall = time.perf_counter() - start
    print(json.dumps({"n": args.n, "wall_s": round(wall, 2), "images_per_s": round(args.n / wall, 1),
                      "peak_rss_before_mb": round(before, 1), "peak_rss_mb": round(_rss_mb(), 1)}))  # fmt: skip


def measure(args: argparse.Namespace, manifest: Path, n: int, store: Path) -> dict:
    command = [sys.executable, __file__, "--child", "--manifest", str(manifest), "--n", str(n), "--store", str(store),
               "--threads", str(args.threads), "--batch-size", str(args.batch_size)]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images in the small run (the large one has 10x)")
    parser.add_argument("--model", default=None, help="diffusers model directory (default: a demo-sized VAE)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batch-size", type=int, default=32, help="LatentsConfig.batch_size")
    parser.add_argument("--out", default="benchmarks/results/encode_latents.json", help="JSON file to write")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = draw_images(Path(tmp) / "data", 10 * args.n)
        print(f"drew {10 * args.n} images in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        runs = {}
        for n in (args.n, 10 * args.n):
            runs[str(n)] = measure(args, manifest, n, Path(tmp) / f"latents-{n}.zarr")
            print(json.dumps(runs[str(n)]), file=sys.stderr)
    small, large = runs[str(args.n)], runs[str(10 * args.n)]
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    growth = [r["peak_rss_mb"] - r["peak_rss_before_mb"] for r in (small, large)]
    result = {
        "model": args.model or "untrained AutoencoderKL, block_out_channels (32, 64, 64, 64)",
        "image_size": 128,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "runs": runs,
        "peak_rss_ratio": round(ratio, 3),
        "rss_growth_during_encoding_mb": [round(g, 1) for g in growth],
        "required_ratio": REQUIRED_RATIO,
        "ok": bool(ratio <= REQUIRED_RATIO),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
