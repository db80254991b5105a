"""Throughput of iterated learning on the demo latents, and the demo run's figures.

    python benchmarks/train_il.py [--latents results/latents] [--classes results/data/classes.json]
        [--history results/il/history.csv] [--snakemake-benchmark benchmarks/il/train_il.tsv]
        [--out benchmarks/train_il/train_il.json] [--threads 2]

Times one interaction epoch (Eq. 5 on S, D, C) and one imitation epoch (Eq. 2, a fresh student
imitating a teacher) with the config.yaml `il` section on the training latents, and reads the
demo's train_il wall time (Snakemake `benchmark:` file) and the history's last validation
figures when they exist. Writes JSON and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from ltaug.backbone.latents import open_latents
from ltaug.common.config import from_dict, validate_config
from ltaug.data.classes import read_classes
from ltaug.method.iterated import (
    ILConfig,
    LatentStream,
    build_model,
    build_student,
    class_pos_weight,
    imitation_phase,
    interaction_phase,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--latents", default="results/latents", help="directory of {train,val}.zarr")
    parser.add_argument("--classes", default="results/data/classes.json")
    parser.add_argument("--history", default="results/il/history.csv")
    parser.add_argument("--snakemake-benchmark", default="benchmarks/il/train_il.tsv")
    parser.add_argument("--out", default="benchmarks/train_il/train_il.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    cfg = from_dict(ILConfig, {**config["il"], "threads": args.threads}, "il")
    torch.set_num_threads(cfg.threads)
    device = torch.device("cpu")
    split = read_classes(args.classes)
    group = open_latents(Path(args.latents) / "train.zarr")
    train = LatentStream(group, cfg.batch_size, cfg.shuffle_buffer)
    one_epoch = ILConfig(**{**cfg.identity(), "threads": cfg.threads, "interaction_epochs": 1, "imitation_epochs": 1})
    shape = tuple(group["z"].shape[1:])
    model = build_model(one_epoch, shape, len(split.classes))
    pos_weight = class_pos_weight(group["labels"][:].sum(axis=0), train.n, cfg.pos_weight_max)

    start = time.perf_counter()
    (interaction,) = interaction_phase(model, train, one_epoch, pos_weight, 1, device)
    interaction_wall = time.perf_counter() - start
    student = build_student(one_epoch, shape[0], 2)
    start = time.perf_counter()
    (imitation,) = imitation_phase(model.student, student, train, one_epoch, 2, device)
    imitation_wall = time.perf_counter() - start

    result = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": cfg.threads, "torch": torch.__version__,
                    "python": platform.python_version(), "device": str(device)},  # fmt: skip
        "n_train": train.n,
        "latent_shape": list(shape),
        "interaction_epoch": {"samples_per_s": round(interaction["samples_per_s"], 1), "wall_s": round(interaction_wall, 2)},
        "imitation_epoch": {"samples_per_s": round(imitation["samples_per_s"], 1), "wall_s": round(imitation_wall, 2)},
        "epochs_per_run": cfg.interaction_epochs * cfg.generations + cfg.imitation_epochs * (cfg.generations - 1),
        "il": cfg.identity(),
    }
    if Path(args.snakemake_benchmark).is_file():
        result["demo_train_il_wall_s"] = float(pd.read_csv(args.snakemake_benchmark, sep="\t")["s"].iloc[0])
    if Path(args.history).is_file():
        last = pd.read_csv(args.history).iloc[-1]
        result["history_last"] = {k: round(float(last[k]), 4) for k in
                                  ("val_recon_mse", "val_map_head", "val_map_tail", "val_map_all", "val_sparsity")}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
