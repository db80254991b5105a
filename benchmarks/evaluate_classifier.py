"""Time and quality of evaluate_classifier on the demo data, for the demo config or variants of it.

    python benchmarks/evaluate_classifier.py --manifest results/data/manifest.csv \
        --classes results/data/classes.json [--synthetic results/synthetic/resample/draw0] \
        [--set steps=300 --set image_size=64 ...] [--threads 2] [--config config.yaml]
        [--out benchmarks/evaluate_classifier]

Writes <label>.json in ``--out`` (benchmarks/evaluate_classifier: seconds, head/tail mAP, prevalence
of the tail classes in the test split) and prints one line per run. Nothing under results/ is written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ltaug.common.config import validate_config
from ltaug.data.classes import read_classes
from ltaug.data.manifest import read_manifest
from ltaug.data.synthetic import read_synthetic_set
from ltaug.evaluation.classifier import ClassifierConfig, evaluate_method

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="manifest.csv of prepare_data")
    parser.add_argument("--classes", required=True, help="classes.json of split_classes")
    parser.add_argument("--synthetic", default="", help="a synthetic set directory ('' = the baseline)")
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="the config whose eval.classifier to start from")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE (YAML) over the config's eval.classifier")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--label", default="", help="name of the JSON file (default: <method>-<unix time>)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "evaluate_classifier"), help="directory of the JSON file")
    args = parser.parse_args()

    config = validate_config(yaml.safe_load(Path(args.config).read_text()), source=args.config)
    params = {**config["eval"]["classifier"], "threads": args.threads}
    for item in args.set:
        key, value = item.split("=", 1)
        params[key] = yaml.safe_load(value)
    cfg = ClassifierConfig(**params)
    torch.set_num_threads(cfg.threads)
    split = read_classes(args.classes)
    manifest = read_manifest(args.manifest)
    synthetic = read_synthetic_set(args.synthetic, split.classes, split.tail) if args.synthetic else None
    method = synthetic.method if synthetic else "baseline"
    start, cpu = time.perf_counter(), time.process_time()
    results, _, _, _ = evaluate_method(method, manifest, split, [synthetic] if synthetic else None, cfg, torch.device("cpu"))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    test = manifest[manifest["split"] == "test"]
    prevalence = float(np.mean([test[c].mean() for c in split.tail]))
    row = {"method": method, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "map_head": results["mean"]["map_head"],
           "map_tail": results["mean"]["map_tail"], "auroc_macro": results["mean"]["auroc_macro"],
           "tail_test_prevalence": prevalence, "tail_ap": {c: results["mean"]["ap"][c] for c in split.tail},
           "config": results["config"], "best_step": [r["best_step"] for r in results["runs"]]}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label = args.label or f"{method}-{int(time.time())}"
    (out / f"{label}.json").write_text(json.dumps(row, indent=2) + "\n")
    print(f"{label}: {seconds:.1f} s ({cpu:.1f} s CPU), head mAP {row['map_head']:.3f}, tail mAP {row['map_tail']:.3f} "
          f"(tail prevalence {prevalence:.3f}), AUROC {row['auroc_macro']:.3f}, best step {row['best_step']}")  # fmt: skip


if __name__ == "__main__":
    main()
