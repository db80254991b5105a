"""Full-size architectures on this machine: SD 1.5 (RoentGen's) at 512 px and DenseNet121 at 224 px, per image.

    python benchmarks/full_size.py [--images 4] [--threads 2] [--keep DIR] [--widths full] [--jpegs 8]
        [--out benchmarks/full_size]

Builds, locally and with random weights, a directory laid out as the hub stores SD 1.5
(tests/helpers/hub_layouts.py: the published component configs, safety_checker and feature_extractor
entries, the PNDM scheduler; about 1.07 billion parameters, 4.3 GB of safetensors), then, in a
fresh process so that the build's memory is not counted, loads it through the workflow's loader
(ltaug.backbone.model_dir.load_stable_diffusion), encodes ``--images`` demo images at 512 px
(ltaug.backbone.latents.to_vae_input + encode_images, latents 4 x 64 x 64), runs ours@1 on them (the last
1 of generate.num_steps = 75 PNDM steps, guidance 3.5: one UNet evaluation on the doubled batch,
ltaug.backbone.diffusion.sample_latents) and decodes them (ltaug.backbone.latents.decode_latents). It records the
wall seconds of each phase, seconds per image, and the peak RSS after each phase, and writes
them to results.json in ``--out`` (benchmarks/full_size), with the floating-point operations of one image in each
network (torch.utils.flop_counter), from which docs/cost.md's GPU-hours follow. Then torchvision's DenseNet121 (Table 1's classifier,
random weights) at 224 px: seconds per image of an AdamW training step (batch 16) and of
inference (batch 64), as evaluate_classifier, real_features and evaluate_fid spend them, and the
seconds to read and resize a MIMIC-CXR-JPG-sized JPEG (2544 x 3056; ``--jpegs`` of them). Nothing
is downloaded; the weights are random, so the images are noise: the point is the cost, not the
picture. ``--widths tiny`` runs every phase with SD 1.5's layout at tiny widths and the DenseNet,
both at 64 px: a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import peak_rss_mib

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "full_size"
sys.path.insert(0, str(REPO / "tests"))


def _rss_gib() -> float:
    return round(peak_rss_mib() / 1024, 2)


def build(path: Path, widths: str = "full") -> dict:
    from helpers.hub_layouts import write_hub_layout

    start = time.perf_counter()
    states = write_hub_layout(path, "sd15", widths=widths)
    params = {name: sum(v.numel() for v in state.values()) for name, state in states.items()}
    return {"build_s": round(time.perf_counter() - start, 1), "parameters": params,
            "disk_gb": round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9, 2)}  # fmt: skip


def measure(path: Path, n_images: int, threads: int, widths: str = "full", jpegs: int = 8) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from ltaug.data.demo import DemoConfig, render_image
    from ltaug.backbone.diffusion import prompt, sample_latents
    from ltaug.backbone.latents import decode_latents, encode_images, to_vae_input
    from ltaug.backbone.model_dir import load_stable_diffusion

    torch.set_num_threads(threads)
    size = 512 if widths == "full" else 64  # the VAE's input; latents of size / 8
    row, lap = {"rss_gib": {"start": _rss_gib()}}, time.perf_counter()

    def done(phase: str, per_image: bool = True) -> None:
        nonlocal lap
        seconds = time.perf_counter() - lap
        row[f"{phase}_s"] = round(seconds, 2)
        if per_image:
            row[f"{phase}_s_per_image"] = round(seconds / n_images, 2)
        row["rss_gib"][phase] = _rss_gib()
        lap = time.perf_counter()
        print(json.dumps({phase: row[f"{phase}_s"], "rss_gib": row["rss_gib"][phase]}), flush=True)

    sd = load_stable_diffusion(path, torch.device("cpu"))
    done("load", per_image=False)
    cfg = DemoConfig(image_size=128)
    images = [Image.fromarray(render_image(cfg, "train", i, ["Nodule"])[0]) for i in range(n_images)]
    x = to_vae_input(np.stack([np.asarray(im.convert("L").resize((size, size), Image.BILINEAR)) for im in images]))
    with torch.no_grad():
        z = encode_images(sd.vae, x, "mean", 0, 0)
    assert z.shape == (n_images, 4, size // 8, size // 8), z.shape
    done(f"encode_{size}px")
    texts = [prompt(np.array([1]), ["Nodule"])] * n_images
    with torch.no_grad():
        z1 = sample_latents(sd, texts, 75, 3.5, torch.Generator().manual_seed(0), z_start=z, last_steps=1)
    done("ours@1_unet")
    pixels = decode_latents(sd.vae, z1, batch_size=1)
    assert pixels.shape == (n_images, size, size, 3)
    done(f"decode_{size}px")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # floating-point operations of one image (torch's FlopCounterMode: matmuls, convolutions, attention)
        row["gflop_per_image"] = {
            f"encode_{size}px": _gflop(lambda: encode_images(sd.vae, x[:1], "mean", 0, 0)),
            "ours@1_unet": _gflop(lambda: sample_latents(sd, texts[:1], 75, 3.5, gen, z_start=z[:1], last_steps=1)),
            f"decode_{size}px": _gflop(lambda: decode_latents(sd.vae, z1[:1], batch_size=1)),
        }
    row["gflop_per_image"] |= il_flops((4, size // 8, size // 8))
    print(json.dumps(row["gflop_per_image"]), flush=True)
    sd = None  # its memory back before the DenseNet
    densenet(row, threads, size=224 if widths == "full" else 64)  # 64: 2 x 2 features, so a batch of 1 trains
    jpeg_cost(row, jpegs)
    return row


def jpeg_cost(row: dict, n: int = 8) -> None:
    """Seconds per image to read a JPEG and resize it as decode_images does (ltaug.common.images.load_image), once per
    size (512 px for encode_latents, 224 px for the classifier and FID): at
    MIMIC-CXR-JPG's size (2544 x 3056 grayscale, quality 95) and from a copy resized to 512 px once."""
    import numpy as np
    from PIL import Image

    from ltaug.common.images import load_image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, side in (("full_res", (2544, 3056)), ("512px", (512, 512))):
            paths = []
            for i in range(n):
                pixels = (rng.random((3056 // 8, 2544 // 8)) * 255).astype(np.uint8)  # smooth at full size
                path = Path(tmp) / f"{name}-{i}.jpg"
                Image.fromarray(pixels).resize((2544, 3056), Image.BILINEAR).resize(side, Image.BILINEAR).save(path, quality=95)
                paths.append(path)
            row[f"jpeg_{name}_mb"] = round(sum(p.stat().st_size for p in paths) / n / 1e6, 3)
            for size in (512, 224):
                start = time.perf_counter()
                for path in paths:
                    load_image(path, size)
                row[f"jpeg_{name}_to_{size}px_s_per_image"] = round((time.perf_counter() - start) / n, 4)
    print(json.dumps({k: v for k, v in row.items() if k.startswith("jpeg")}), flush=True)


def _gflop(run) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return round(counter.get_total_flops() / 1e9, 1)


def il_flops(latent: tuple[int, int, int] = (4, 64, 64), classes: int = 26) -> dict:
    """FLOPs per latent of the IL networks S, D, C (the config's defaults) at RoentGen's latent shape: a training
    step (forward and backward, as train_il spends it per sample and epoch) and a forward pass (cam_maps, pairing)."""
    import torch

    from ltaug.method.iterated import ILConfig, build_model

    model = build_model(ILConfig(), latent, classes)
    z = torch.randn(1, *latent)

    def train() -> None:
        _, reconstruction, logits = model(z)
        (reconstruction.square().mean() + logits.sum()).backward()

    with torch.no_grad():
        forward = _gflop(lambda: model(z))
    return {"il_train_per_latent": _gflop(train), "il_forward_per_latent": forward}


def densenet(row: dict, threads: int, train_batch: int = 16, infer_batch: int = 64, repeats: int = 3, size: int = 224) -> None:
    """DenseNet121 at ``size`` px (ltaug.evaluation.classifier.build_densenet with the defaults): s/image to train and to infer."""
    import torch
    import torch.nn.functional as F

    from ltaug.evaluation.classifier import ClassifierConfig, build_densenet

    model = build_densenet(ClassifierConfig(), 26)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(train_batch, 3, size, size), (torch.rand(train_batch, 26) < 0.1).float()
    model.train()
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    row["densenet121_train_s_per_image"] = round(sorted(times[1:])[len(times[1:]) // 2] / train_batch, 4)
    model.eval()
    x = torch.randn(infer_batch, 3, size, size)
    with torch.no_grad():
        model(x[:8])
        start = time.perf_counter()
        model(x)
    row["densenet121_infer_s_per_image"] = round((time.perf_counter() - start) / infer_batch, 4)
    row["rss_gib"]["densenet121"] = _rss_gib()

    def train_one() -> None:
        model.train()
        F.binary_cross_entropy_with_logits(model(x[:1]), y[:1]).backward()

    row["gflop_per_image"]["densenet121_train"] = _gflop(train_one)  # forward and backward
    model.eval()
    with torch.no_grad():
        row["gflop_per_image"]["densenet121_infer"] = _gflop(lambda: model(x[:1]))
    print(json.dumps({k: row[k] for k in ("densenet121_train_s_per_image", "densenet121_infer_s_per_image")}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="demo images encoded, denoised and decoded")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the measuring process")
    parser.add_argument("--keep", default="", help="build the model here and keep it (default: a temporary directory)")
    parser.add_argument("--widths", default="full", choices=["full", "tiny"],
                        help="tiny: SD 1.5's layout at tiny widths, all at 64 px (a check that the script runs)")
    parser.add_argument("--jpegs", type=int, default=8, help="JPEGs of each size read for the JPEG cost")
    parser.add_argument("--out", default=str(OUT), help="directory of results.json")
    parser.add_argument("--measure", default="", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(Path(args.measure), args.images, args.threads, args.widths, args.jpegs)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "sd15"
        result = {"images": args.images, "threads": args.threads, "machine": platform.processor() or platform.machine(),
                  "cpus": len(os.sched_getaffinity(0)), "widths": args.widths}  # fmt: skip
        if not (path / "model_index.json").exists():
            result |= build(path, args.widths)
        child = subprocess.run([sys.executable, __file__, "--measure", str(path), "--images", str(args.images),
                                "--threads", str(args.threads), "--widths", args.widths, "--jpegs", str(args.jpegs)],
                               capture_output=True, text=True)  # fmt: skip
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not lines:
            sys.exit(f"measurement failed:\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}")
        result |= json.loads(lines[-1][len("RESULT "):])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
