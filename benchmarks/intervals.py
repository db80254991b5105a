"""Cost of Table 1's paired bootstrap (rule compare_methods) as the test split, the classes and the seeds grow.

    python benchmarks/intervals.py [--shapes 4000x11x1 4000x11x3 10000x40x3] [--methods 7] [--resamples 1000]
        [--out benchmarks/intervals/results.csv]

Each shape is N test images x K classes x S seeds; the labels have the demo's kind of prevalences
(a few head classes at 20-30 %, the rest rare, the rarest at 1 %), the scores are random. Every
shape runs in a fresh process (its peak RSS is its own) through ltaug.evaluation.intervals.compare_methods on
.npz files as evaluate_classifier writes them. Writes ``--out`` (benchmarks/intervals/results.csv) with wall
seconds, peak RSS and seconds per million (replicate x image x class x seed x method) units, the
constant that predicts larger runs (the work is linear in each factor).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def run_one(n: int, k: int, seeds: int, methods: int, resamples: int) -> dict:
    from ltaug.data.classes import ClassSplit
    from ltaug.evaluation.classifier import write_scores
    from ltaug.evaluation.intervals import IntervalsConfig, compare_methods

    rng = np.random.default_rng(0)
    prevalence = np.geomspace(0.3, 0.01, k)
    labels = (rng.random((n, k)) < prevalence).astype(np.uint8)
    classes = [f"c{i}" for i in range(k)]
    split = ClassSplit(classes=classes, head=classes[:3], medium=classes[3 : k - 4], tail=classes[k - 4 :],
                       train_counts={}, prevalence={}, n={})  # fmt: skip
    names = ["baseline", "resample"] + [f"m{i}" for i in range(methods - 2)]  # Table 1's references first
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for m in names:
            paths[m] = Path(tmp) / f"{m}.npz"
            write_scores(paths[m], {"ids": np.asarray([f"t{i}" for i in range(n)]), "labels": labels,
                                    "classes": np.asarray(classes), "seeds": np.arange(seeds),
                                    "scores": labels + rng.normal(0, 1.5, (seeds, n, k))})  # fmt: skip
        start = time.perf_counter()
        compare_methods(paths, split, IntervalsConfig(resamples=resamples))
        wall = time.perf_counter() - start
    units = resamples * n * k * seeds * methods / 1e6
    return {"n_test": n, "classes": k, "seeds": seeds, "methods": methods, "resamples": resamples,
            "wall_s": round(wall, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "s_per_million_units": round(wall / units, 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["4000x11x1", "4000x11x3", "10000x40x3"],
                        help="NxKxS: N test images, K classes (at least 7: 3 head, 4 tail), S seeds")
    parser.add_argument("--methods", type=int, default=7,
                        help="methods compared, at least 2: the references baseline and resample, then others")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "intervals" / "results.csv"), help="CSV file to write")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # a single shape, in this process
    args = parser.parse_args()
    if args.methods < 2:
        parser.error("--methods: at least 2 (the references baseline and resample, IntervalsConfig.references)")
    if args.one:
        n, k, s = map(int, args.one.split("x"))
        print(json.dumps(run_one(n, k, s, args.methods, args.resamples)))
        return
    rows = []
    for shape in args.shapes:
        out = subprocess.run([sys.executable, __file__, "--one", shape, "--methods", str(args.methods),
                              "--resamples", str(args.resamples)], capture_output=True, text=True, check=True)  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    print(table.to_string(index=False))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
