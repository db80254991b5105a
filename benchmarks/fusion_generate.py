"""Speed of cam_maps, pair_neighbours, fuse and generate on demo-sized data, in one run.

    python benchmarks/fusion_generate.py [--results results] [--threads 2] [--n-text 32] \
        [--out benchmarks/fusion_generate]

Reports, with config.yaml's cam, pairing, fusion and generate sections:
  - EigenCAM maps/s over the training latents, pair_neighbours seconds;
  - fused samples/s (fusion.n_per_class per tail class);
  - generated images/s for every s in (0, 1, 5): the VAE decode alone, and the last s of
    generate.num_steps UNet steps before it; and for generate.num_steps-step text-to-image
    (RoentGen@N) with the same model and batch size, on --n-text samples: the ratio is the
    paper's speed claim for N/d denoising;
  - the share of fused positions taken from the tail vector (and decided by the coin) at
    fusion.tau_h / tau_l, overall and per tail class.

With --results pointing at a finished demo run (results/latents/train.zarr, results/il/model.pt,
results/diffusion/model, results/data/classes.json), those are used and the shares are the
demo's. Without them, demo-sized stand-ins are built: 2000 random latents of 4 x 16 x 16 with the
demo's prevalences, and untrained models of the demo's architectures (same compute, so the speeds
hold; the shares do not mean anything then). Every stage writes into a temporary directory.
Outputs: <out>/results.json and <out>/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
import zarr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # helpers.stage_models: the stand-in models

from ltaug.common.config import from_dict, validate_config  # noqa: E402


def stand_ins(root: Path, config: dict) -> tuple[Path, Path, Path, object]:
    """Untrained demo-architecture SD and IL models and 2000 random training latents: (model, il, latents, split)."""
    from helpers.stage_models import save_tiny_sd

    from ltaug.backbone.bootstrap_config import BootstrapConfig
    from ltaug.data.classes import ClassSplit
    from ltaug.method.iterated import ILConfig, build_model
    from ltaug.method.checkpoint import checkpoint, save_checkpoint
    from ltaug.common.shards import COMPRESSOR
    from ltaug.backbone.model_dir import fingerprint

    prevalence = dict(config["demo"]["prevalence"])
    classes = list(prevalence) + ["No Finding"]
    boot = from_dict(BootstrapConfig, {**config["diffusion"]["bootstrap"], "image_size": config["latents"]["image_size"]},
                     "diffusion.bootstrap")  # fmt: skip
    model = save_tiny_sd(root / "sd", boot, classes, seed=0)  # untrained, of the demo's sizes
    n, side = config["demo"]["n_train"], config["latents"]["image_size"] // 8
    rng = np.random.default_rng(0)
    labels = np.zeros((n, len(classes)), dtype=np.uint8)
    for k, p in enumerate(prevalence.values()):
        labels[rng.choice(n, round(p * n), replace=False), k] = 1
    labels[:, -1] = labels[:, :-1].sum(axis=1) == 0
    latents = root / "train.zarr"
    group = zarr.open_group(latents, mode="w", zarr_format=3)
    group.create_array("z", data=rng.standard_normal((n, 4, side, side), dtype=np.float32), chunks=(256, 4, side, side),
                       compressors=COMPRESSOR)  # fmt: skip
    group.create_array("labels", data=labels, chunks=(256, len(classes)), compressors=COMPRESSOR)
    group.create_array("ids", shape=(n,), chunks=(256,), dtype=str)[:] = np.array([f"train-{i:05d}" for i in range(n)])
    fp = fingerprint(model)
    group.attrs.update({"classes": classes, "split": "train", "model_path": str(model), "model_fingerprint": fp,
                        "scaling_factor": 1.0, "shift_factor": None, "image_size": 8 * side, "complete": True})  # fmt: skip
    il_cfg = from_dict(ILConfig, config["il"], "il")
    prev = labels.mean(axis=0)
    split = ClassSplit(classes, [c for c, p in zip(classes, prev) if p >= config["long_tail"]["head_min_prevalence"]
                                 and c != "No Finding"],
                       [c for c, p in zip(classes, prev) if p <= config["long_tail"]["tail_max_prevalence"]],
                       [], {}, {}, {})  # fmt: skip
    net = build_model(il_cfg, (4, side, side), len(classes)).eval()
    attrs = {"model_fingerprint": fp, "classes": classes}
    data = {"train": attrs | {"n": n}, "val": attrs | {"n": 0}, "head": split.head, "tail": split.tail}
    il = root / "model.pt"
    save_checkpoint(checkpoint(net, il_cfg, data, il_cfg.generations, [], (4, side, side), split), il)
    return model, il, latents, split


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="", help="a finished demo run's results/ directory (default: stand-ins)")
    parser.add_argument("--il", default="", help="IL model to use with --results (default: <results>/il/model.pt)")
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="the config whose stage sections to use")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--n-text", type=int, default=32, help="text-to-image samples at generate.num_steps steps")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "fusion_generate"), help="directory of the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ltaug.method.cam import CamConfig, cam_maps
    from ltaug.data.classes import read_classes
    from ltaug.backbone.diffusion import sample_latents
    from ltaug.method.fusion import FusionConfig
    from ltaug.method.fused_store import fuse_latents
    from ltaug.method.generate import GenerateConfig, generate_set
    from ltaug.backbone.latents import decode_latents
    from ltaug.backbone.model_dir import load_stable_diffusion
    from ltaug.method.pairing import PairingConfig, pair_neighbours

    config = validate_config(yaml.safe_load(Path(args.config).read_text()))
    cpu = torch.device("cpu")
    tmp = Path(tempfile.mkdtemp(prefix="fusion_generate-"))
    if args.results:
        results = Path(args.results)
        model, latents = results / "diffusion/model", results / "latents/train.zarr"
        il = Path(args.il) if args.il else results / "il/model.pt"
        split, source = read_classes(results / "data/classes.json"), f"demo run {results}, IL model {il}"
    else:
        model, il, latents, split = stand_ins(tmp, config)
        source = "stand-ins: random latents, untrained demo-architecture models"
    cam_cfg = from_dict(CamConfig, {k: v for k, v in config["cam"].items() if k not in ("splits", "shards")}, "cam")
    fusion_cfg = from_dict(FusionConfig, config["fusion"], "fusion")
    gen = config["generate"]
    n_train = zarr.open_group(latents, mode="r")["z"].shape[0]

    report: dict = {"source": source, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "n_train": n_train, "tail": split.tail,
                    "fusion": config["fusion"], "generate": gen}  # fmt: skip
    _, seconds = timed(cam_maps, latents, il, tmp / "cam.zarr", cam_cfg, cpu)
    report["cam_maps"] = {"seconds": round(seconds, 2), "maps_per_s": round(n_train / seconds, 1)}
    pairs, seconds = timed(pair_neighbours, latents, tmp / "cam.zarr", il, split, tmp / "pairs.csv",
                           from_dict(PairingConfig, config["pairing"], "pairing"), fusion_cfg.n_per_class)  # fmt: skip
    report["pair_neighbours"] = {"seconds": round(seconds, 2), "tail_samples": len(pairs)}
    fused, seconds = timed(fuse_latents, tmp / "pairs.csv", latents, tmp / "cam.zarr", il, split, tmp / "fused.zarr",
                           fusion_cfg)  # fmt: skip
    report["fuse"] = {"seconds": round(seconds, 2), "samples": len(fused), "samples_per_s": round(len(fused) / seconds, 1)}
    report["tail_share"] = {
        "tau_h": fusion_cfg.tau_h, "tau_l": fusion_cfg.tau_l,
        "mean": round(float(fused["tail_share"].mean()), 4), "coin_mean": round(float(fused["coin_share"].mean()), 4),
        "per_class": {t: round(float(g["tail_share"].mean()), 4) for t, g in fused.groupby("tail_class", sort=False)},
    }  # fmt: skip

    report["generate"] = {}
    for s in (0, 1, 5):
        cfg = GenerateConfig(**{**{k: v for k, v in gen.items() if k != "steps"}, "steps": [s]})
        manifest, seconds = timed(generate_set, tmp / "fused.zarr", model, tmp / f"ours@{s}", s, cfg, cpu)
        report["generate"][f"ours@{s}"] = {"seconds": round(seconds, 2), "images": len(manifest),
                                           "images_per_s": round(len(manifest) / seconds, 2)}  # fmt: skip

    sd = load_stable_diffusion(model, cpu)
    prompts = [split.tail[i % len(split.tail)].lower() for i in range(args.n_text)]
    start = time.perf_counter()
    for a in range(0, args.n_text, gen["batch_size"]):
        z = sample_latents(sd, prompts[a : a + gen["batch_size"]], gen["num_steps"], gen["guidance_scale"],
                           torch.Generator().manual_seed(a))  # fmt: skip
        decode_latents(sd.vae, z)
    seconds = time.perf_counter() - start
    t2i = args.n_text / seconds
    report["generate"][f"text_to_image@{gen['num_steps']}"] = {"seconds": round(seconds, 2), "images": args.n_text,
                                                             "images_per_s": round(t2i, 3)}  # fmt: skip
    for s in (0, 1, 5):
        row = report["generate"][f"ours@{s}"]
        row["speedup_vs_text_to_image"] = round(row["images_per_s"] / t2i, 1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# fusion and generation speed ({source}; {args.threads} threads, {report['cpu']})", "",
             "| stage | seconds | throughput |", "|---|---|---|",
             f"| cam_maps ({n_train} train latents) | {report['cam_maps']['seconds']} | {report['cam_maps']['maps_per_s']} maps/s |",
             f"| pair_neighbours ({len(pairs)} tail samples) | {report['pair_neighbours']['seconds']} | |",
             f"| fuse ({len(fused)} samples) | {report['fuse']['seconds']} | {report['fuse']['samples_per_s']} samples/s |"]  # fmt: skip
    for name, row in report["generate"].items():
        extra = f" ({row['speedup_vs_text_to_image']}x text-to-image)" if "speedup_vs_text_to_image" in row else ""
        lines.append(f"| generate {name} ({row['images']} images) | {row['seconds']} | {row['images_per_s']} images/s{extra} |")
    share = report["tail_share"]
    lines += ["", f"Positions from the tail vector at tau_h = {share['tau_h']}, tau_l = {share['tau_l']}: "
              f"{share['mean']:.1%} (coin-decided {share['coin_mean']:.1%}); per class: "
              + ", ".join(f"{t} {v:.1%}" for t, v in share["per_class"].items())]  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
