"""float32 against bfloat16 autocast for every training pass with a precision key, with oneDNN's bfloat16 kernels on and off.

    python benchmarks/precision.py [--config config.yaml] [--threads 1] [--repeats 10] [--out benchmarks/precision]

The passes: the bootstrap VAE's training step (diffusion.bootstrap.vae_precision, at its batch and
crop), iterated learning's interaction step (il.precision, at il.batch_size on latents of the demo's
shape) and the DenseNet of Table 1 (eval.classifier.precision, at its size and batch), each freshly
initialised from the config (no data needed), in milliseconds per step under float32 and under
bfloat16 autocast. Each is measured twice, in a process of its own: as this machine runs, and with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE``, which turns oneDNN's bfloat16 kernels off (a CPU with AMX or
AVX512-BF16 then computes bfloat16 as one without does), with what ``auto`` resolves to in each.
Writes results.json and results.md in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from memory_format import per_call_ms, training_step  # benchmarks/memory_format.py: warm-up, then the mean

from ltaug.backbone import bootstrap_models as nets
from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.bootstrap_training import vae_loss
from ltaug.common.config import validate_config
from ltaug.common.precision import cpu_flags, resolve_precision, training_autocast
from ltaug.data.demo import class_names
from ltaug.evaluation.classifier import ClassifierConfig, build_densenet
from ltaug.method.iterated import ILConfig, build_model, interaction_losses

REPO = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
OFF = "AVX512_CORE"  # oneDNN's ISA cap below AVX512_CORE_BF16: no bfloat16 kernels


def passes(config: dict) -> dict:
    """{name: (model, inputs, loss of (model, inputs))} of the three training passes, seeded."""
    side = config["latents"]["image_size"]
    boot = BootstrapConfig(**{**config["diffusion"]["bootstrap"], "image_size": side})
    il = ILConfig(**config["il"])
    clf = ClassifierConfig(**config["eval"]["classifier"])
    crop = boot.vae_crop_size or side
    latent = (4, side // 8, side // 8)
    k = len(class_names())  # the demo's classes
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    return {
        "vae": (nets.build_vae(boot).train(), [torch.rand(boot.vae_batch_size, 3, crop, crop) * 2 - 1],
                lambda m, x: vae_loss(m, x[0], boot, generator)),
        "il": (build_model(il, latent, k).train(),
               [torch.randn(il.batch_size, *latent), (torch.rand(il.batch_size, k) < 0.2).float()],
               lambda m, x: interaction_losses(m, x[0], x[1], il, None)[0]),
        "densenet": (build_densenet(clf, k).train(),
                     [torch.randn(clf.batch_size, 3, clf.image_size, clf.image_size),
                      (torch.rand(clf.batch_size, k) < 0.2).float()],
                     lambda m, x: F.binary_cross_entropy_with_logits(m(x[0]).float(), x[1])),
    }  # fmt: skip


def measure(config: dict, threads: int, repeats: int) -> dict:
    """ms per step of every pass in float32 and bfloat16 autocast, in this process."""
    torch.set_num_threads(threads)
    rows = {}
    for name, (model, inputs, loss) in passes(config).items():
        row = {}
        for precision in ("float32", "bfloat16"):
            def step_loss(m, x, p=precision):
                with training_autocast(p, CPU):
                    return loss(m, x)

            row[f"{precision}_ms"] = per_call_ms(training_step(model, inputs, step_loss), repeats)
        row["bfloat16_speed_up"] = row["float32_ms"] / row["bfloat16_ms"]
        rows[name] = row
    return {"auto": resolve_precision("auto", CPU, "auto"), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "threads": threads, "passes": rows}  # fmt: skip


def in_process(args: argparse.Namespace, env: dict) -> dict:
    """:func:`measure` in a fresh process with ``env`` (oneDNN reads its ISA cap once, when it starts)."""
    cmd = [sys.executable, __file__, "--config", args.config, "--threads", str(args.threads), "--repeats",
           str(args.repeats), "--child"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    if done.returncode:
        raise SystemExit(f"precision.py child failed:\n{done.stderr}")
    return json.loads(done.stdout)


def table(runs: dict) -> str:
    lines = ["| bfloat16 kernels | auto resolves to | pass | float32 ms/step | bfloat16 ms/step | bfloat16 speed-up |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for label, run in runs.items():
        for name, row in run["passes"].items():
            lines.append(f"| {label} | {run['auto']} | {name} | {row['float32_ms']:.1f} | {row['bfloat16_ms']:.1f} | "
                         f"{row['bfloat16_speed_up']:.2f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="the config whose networks and batches to use")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a demo job's, on a CPU: 1)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per measurement (after 3 warm-up steps)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "precision"), help="directory of results.json / .md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = validate_config(yaml.safe_load(Path(args.config).read_text()), source=args.config)
    if args.child:
        print(json.dumps(measure(config, args.threads, args.repeats)))
        return
    native = sorted(f for f in cpu_flags() if f in ("amx_bf16", "avx512_bf16"))
    runs = {"as this machine runs": in_process(args, {}),
            f"off (ONEDNN_MAX_CPU_ISA={OFF})": in_process(args, {"ONEDNN_MAX_CPU_ISA": OFF})}  # fmt: skip
    result = {"config": args.config, "cpu_bfloat16_flags": native, "threads": args.threads, "repeats": args.repeats,
              "runs": runs}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    md = f"CPU bfloat16 flags: {', '.join(native) or 'none'}; {args.threads} thread(s)\n\n" + table(runs)
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
