"""Time ``ltaug.data.demo.make_demo`` on the default demo config (6,400 images at 128x128).

    python benchmarks/demo_data.py [--out benchmarks/results/demo_data.json] [--workers 2]
        [--n-train 2000] [--n-val 400] [--n-test 4000] [--image-size 128]

Writes wall seconds, images per second and the training split's per-class prevalence as
JSON, and prints it. The data set itself goes to a temporary directory and is deleted. The
split sizes and the image size default to ``DemoConfig``'s; smaller ones make a quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from ltaug.data.demo import SPLITS, DemoConfig, class_names, make_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/demo_data.json", help="JSON file to write")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    for split in SPLITS:
        parser.add_argument(f"--n-{split}", type=int, default=getattr(DemoConfig, f"n_{split}"),
                            help=f"images in the {split} split (default: DemoConfig's %(default)s)")
    parser.add_argument("--image-size", type=int, default=DemoConfig.image_size,
                        help="side in pixels, a multiple of 8, >= 32 (default: DemoConfig's %(default)s)")
    args = parser.parse_args()

    cfg = DemoConfig(image_size=args.image_size, **{f"n_{s}": getattr(args, f"n_{s}") for s in SPLITS})
    n_images = sum(getattr(cfg, f"n_{s}") for s in SPLITS)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_demo(Path(tmp) / "demo", cfg, workers=args.workers)
        wall = time.perf_counter() - start
        train = pd.read_csv(Path(tmp) / "demo" / "train.csv")
    result = {
        "config": {"image_size": cfg.image_size, "n_images": n_images, "seed": cfg.seed},
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "wall_s": round(wall, 2),
        "images_per_s": round(n_images / wall, 1),
        "train_prevalence": {c: round(float(train[c].mean()), 4) for c in class_names()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
