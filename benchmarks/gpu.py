"""Throughput and peak GPU memory of the workflow's GPU work with the full-size architectures.

    python benchmarks/gpu.py [--images 16] [--device cuda] [--dtype float16] [--widths full] [--out benchmarks/gpu]

Builds, locally and with random weights, SD 1.5's architecture as the hub lays it out (RoentGen's;
tests/helpers/hub_layouts.py, about 1.07 billion parameters), loads it through the workflow's loader in
``--dtype`` (the VAE stays float32, as in every stage) and measures, on ``--device``:
  - encode: images/s of ltaug.backbone.latents.encode_images at 512 px (latents 4 x 64 x 64);
  - ours@5: images/s of the last 5 of 75 PNDM steps (guidance 3.5) plus the VAE decode;
  - text-to-image@75: images/s of all 75 steps plus the decode (RoentGen@75 in Table 1);
  - DenseNet121 at 224 px (evaluate_classifier's network): training images/s of AdamW steps
    under bfloat16 autocast (eval.classifier.precision), batch 32;
and the peak GPU memory of each (torch.cuda.max_memory_allocated, reset before each). Writes
<device type>-<widths>.json in ``--out`` (benchmarks/gpu). Without CUDA, ``--device cuda`` says so and measures nothing;
``--device cpu --widths tiny --images 2`` runs every phase at tiny widths (a check that the
script works, not a measurement). Nothing is downloaded; the images are noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "gpu"
sys.path.insert(0, str(REPO / "tests"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, n: int, work) -> dict:
    """images/s and peak GPU memory (GiB) of ``work()`` on ``n`` images, after one warm-up call."""
    work()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    work()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"images_per_s": round(n / seconds, 3), "seconds": round(seconds, 3),
            "peak_gpu_gib": None if peak is None else round(peak, 2)}  # fmt: skip


def diffusion(path: Path, device: torch.device, dtype: torch.dtype, n: int, size: int) -> dict:
    from ltaug.backbone.diffusion import sample_latents
    from ltaug.backbone.latents import decode_latents, encode_images
    from ltaug.backbone.model_dir import load_stable_diffusion

    sd = load_stable_diffusion(path, device, dtype)
    x = torch.rand(n, 3, size, size, device=device) * 2 - 1
    prompts = ["nodule"] * n
    out = {}
    with torch.no_grad():
        out["encode"] = timed(device, n, lambda: encode_images(sd.vae, x, "mean", 0, 0))
        z = encode_images(sd.vae, x, "mean", 0, 0)

        def ours5():
            gen = torch.Generator(device).manual_seed(0)
            decode_latents(sd.vae, sample_latents(sd, prompts, 75, 3.5, gen, z_start=z, last_steps=5), batch_size=n)

        def text_to_image():
            gen = torch.Generator(device).manual_seed(0)
            decode_latents(sd.vae, sample_latents(sd, prompts, 75, 3.5, gen), batch_size=n)

        out["ours@5"] = timed(device, n, ours5)
        out["text_to_image@75"] = timed(device, n, text_to_image)
    out["speed_ratio_ours@5_vs_text_to_image@75"] = round(
        out["ours@5"]["images_per_s"] / out["text_to_image@75"]["images_per_s"], 2
    )
    return out


def densenet(device: torch.device, batch: int, size: int) -> dict:
    import torch.nn.functional as F

    from ltaug.evaluation.classifier import ClassifierConfig, build_densenet

    model = build_densenet(ClassifierConfig(), 26).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = (torch.rand(batch, 26, device=device) < 0.1).float()

    def steps(k: int = 3):
        for _ in range(k):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return timed(device, 3 * batch, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per diffusion pass")
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (cpu: with --widths tiny, a check)")
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"],
                        help="the UNet's and text encoder's dtype (the VAE stays float32)")
    parser.add_argument("--widths", default="full", choices=["full", "tiny"], help="tiny: a check that the script runs")
    parser.add_argument("--densenet-batch", type=int, default=32, help="DenseNet121 training batch")
    parser.add_argument("--out", default=str(OUT), help="directory of the JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA device here; nothing measured (--device cpu --widths tiny checks the script)")
    from helpers.hub_layouts import write_hub_layout

    size = 512 if args.widths == "full" else 64
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "dtype": args.dtype, "widths": args.widths, "images": args.images, "image_size": size}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        write_hub_layout(Path(tmp) / "sd15", "sd15", widths=args.widths)
        result |= diffusion(Path(tmp) / "sd15", device, getattr(torch, args.dtype), args.images, size)
    result["densenet121_train_224px"] = densenet(device, args.densenet_batch, 224 if args.widths == "full" else 32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{device.type}-{args.widths}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
