"""Time ``ltaug.backbone.bootstrap.bootstrap_diffusion`` (bootstrap_vae, then bootstrap_unet) with the default config on the demo manifest.

    python benchmarks/bootstrap_diffusion.py [--manifest results/data/manifest.csv]
        [--out benchmarks/results/bootstrap_diffusion.json] [--keep DIR] [--config FILE] [--threads 2]

Trains the small Stable Diffusion-format model on the demo's training split (2,000 images
at 128x128 by default) into a temporary directory, then writes the wall time of every
phase, the val PSNR of the VAE reconstructions and the training losses as JSON, and prints
them. With ``--keep DIR`` the sample grids, reconstructions and metrics are copied there.
The model is ``BootstrapConfig``'s defaults unless ``--config`` names a config file, whose
diffusion.bootstrap section (at latents.image_size, as the workflow runs it) is used instead.
The image files are read where the manifest's paths point (relative ones from the current directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from ltaug.backbone.bootstrap import bootstrap_diffusion
from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.diffusion import pick_device
from ltaug.common.config import from_dict, validate_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="results/data/manifest.csv", help="manifest.csv of prepare_data")
    parser.add_argument("--out", default="benchmarks/results/bootstrap_diffusion.json", help="JSON file to write")
    parser.add_argument("--keep", default="", help="copy the sample grids and metrics to this directory")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default cpu: the demo budget)")
    parser.add_argument("--config", default="", help="a config file whose diffusion.bootstrap to train (default: BootstrapConfig's)")
    parser.add_argument("--threads", type=int, default=BootstrapConfig.threads, help="torch CPU threads (default %(default)s)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    section = {}
    if args.config:
        config = validate_config(yaml.safe_load(Path(args.config).read_text()), source=args.config)
        section = {**config["diffusion"]["bootstrap"], "image_size": config["latents"]["image_size"]}
    cfg = from_dict(BootstrapConfig, {**section, "threads": args.threads}, "diffusion.bootstrap")
    torch.set_num_threads(cfg.threads)  # as the workflow's stages do (ltaug.commands); the stage functions do not
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = bootstrap_diffusion(args.manifest, tmp, cfg, device)  # both stages, one after the other
        if args.keep:
            for part in ("vae_samples", "samples"):
                shutil.copytree(Path(tmp) / part, args.keep, dirs_exist_ok=True)
    result = {
        "manifest": args.manifest,
        "bootstrap_config": args.config or "BootstrapConfig defaults",
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": cfg.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "n_train": metrics["n_train"],
        "n_val": metrics["n_val"],
        "wall_s": metrics["wall_s"],
        "val_psnr_db": metrics["val_psnr_db"],
        "val_psnr_min_db": metrics["val_psnr_min_db"],
        "scaling_factor": metrics["scaling_factor"],
        "final_loss": metrics["final_loss"],
        "losses": metrics["losses"],
        "config": metrics["config"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("losses", "config")}, indent=2))


if __name__ == "__main__":
    main()
