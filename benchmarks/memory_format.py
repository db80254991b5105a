"""Channels-last against contiguous (NCHW) memory for the demo's convolutional networks, on this machine.

    python benchmarks/memory_format.py [--config config.yaml] [--threads 1 2] [--repeats 15] [--out benchmarks/memory_format]

For each network, at each thread count: milliseconds per training step (DenseNet of Table 1 at
eval.classifier's size and batch; the bootstrap UNet at its batch) or per forward pass (VAE
encoder on latents.batch_size images, VAE decoder), with the weights and inputs in either memory
format, and the largest difference between the two formats' outputs (the same function: only
float rounding). The networks are freshly initialised from the config (no training data needed).
Then the DenseNet step in float32 against bfloat16 autocast (eval.classifier.precision), and in
channels-last once more: one process on every thread given, against as
many one-thread processes side by side (how `make demo` runs Table 1's classifiers on a CPU), as
steps per second of the whole machine. Writes results.json in ``--out`` (benchmarks/memory_format).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from ltaug.backbone import bootstrap_models as nets
from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.common.config import validate_config
from ltaug.evaluation.classifier import ClassifierConfig, build_densenet

REPO = Path(__file__).resolve().parent.parent
CL = torch.channels_last


def per_call_ms(fn, repeats: int) -> float:
    for _ in range(3):  # warm-up: oneDNN picks its kernels on the first calls
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def training_step(model, inputs, loss_of):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)  # the step's cost is the backward pass, not the optimiser

    def step():
        loss = loss_of(model, inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def compare(name: str, build, make_inputs, run, repeats: int, train_loss=None) -> dict:
    """ms per call in both formats and the outputs' largest difference (same weights, same inputs)."""
    torch.manual_seed(0)
    plain = build()
    fast = copy.deepcopy(plain).to(memory_format=CL)
    inputs = make_inputs()
    fast_inputs = [x.contiguous(memory_format=CL) if x.dim() == 4 else x for x in inputs]
    with torch.no_grad():
        diff = (run(plain.eval(), inputs) - run(fast.eval(), fast_inputs)).abs().max().item()
    row = {"network": name, "max_abs_diff": diff}
    for fmt, model, x in (("contiguous", plain, inputs), ("channels_last", fast, fast_inputs)):
        if train_loss is None:
            model.eval()
            with torch.no_grad():
                row[f"{fmt}_ms"] = per_call_ms(lambda: run(model, x), repeats)
        else:
            model.train()
            row[f"{fmt}_ms"] = per_call_ms(training_step(model, x, train_loss), repeats)
    row["speed_up"] = row["contiguous_ms"] / row["channels_last_ms"]
    return row


def densenet_batch(clf: ClassifierConfig, threads: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded channels-last DenseNet of ``clf`` in training mode and one random batch for it, on ``threads``."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_densenet(clf, 10).to(memory_format=CL).train()
    x = torch.randn(clf.batch_size, 3, clf.image_size, clf.image_size).contiguous(memory_format=CL)
    return model, x, (torch.rand(clf.batch_size, 10) < 0.2).float()


def densenet_steps_per_s(clf: ClassifierConfig, threads: int, repeats: int) -> float:
    model, x, y = densenet_batch(clf, threads)
    step = training_step(model, [x, y], lambda m, b: F.binary_cross_entropy_with_logits(m(b[0]), b[1]))
    return 1000 / per_call_ms(step, repeats)


def densenet_precision(clf: ClassifierConfig, threads: int, repeats: int) -> dict:
    """ms per DenseNet training step (channels-last) in float32 and under bfloat16 autocast (eval.classifier.precision)."""
    model, x, y = densenet_batch(clf, threads)
    row = {"threads": threads}
    for precision in ("float32", "bfloat16"):
        def loss(m, b, on=precision == "bfloat16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=on):
                out = m(b[0])
            return F.binary_cross_entropy_with_logits(out.float(), b[1])

        row[f"{precision}_ms"] = per_call_ms(training_step(model, [x, y], loss), repeats)
    row["speed_up"] = row["float32_ms"] / row["bfloat16_ms"]
    return row


def side_by_side(clf: ClassifierConfig, processes: int, repeats: int) -> dict:
    """Steps per second of the machine: one process on ``processes`` threads, then that many one-thread processes."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        one = pool.apply(densenet_steps_per_s, (clf, processes, repeats))
        many = sum(pool.starmap(densenet_steps_per_s, [(clf, 1, repeats)] * processes))
    return {"processes": processes, "one_process_steps_per_s": one, "one_thread_processes_steps_per_s": many,
            "gain": many / one}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="the config whose networks and batches to use")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure at")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per measurement (after 3 warm-up calls)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "memory_format"), help="directory of results.json")
    args = parser.parse_args()
    config = validate_config(yaml.safe_load(Path(args.config).read_text()), source=args.config)
    side, vae_batch = config["latents"]["image_size"], config["latents"]["batch_size"]
    boot = BootstrapConfig(**{**config["diffusion"]["bootstrap"], "image_size": side})
    clf = ClassifierConfig(**config["eval"]["classifier"])
    h = side // 8

    def dense_loss(model, x):
        return F.binary_cross_entropy_with_logits(model(x[0]), x[1])

    def unet_loss(model, x):
        return model(x[0], x[1], encoder_hidden_states=x[2]).sample.square().mean()

    cases = [
        ("densenet_train", lambda: build_densenet(clf, 10),
         lambda: [torch.randn(clf.batch_size, 3, clf.image_size, clf.image_size), (torch.rand(clf.batch_size, 10) < 0.2).float()],
         lambda m, x: m(x[0]), dense_loss),
        ("unet_train", lambda: nets.build_unet(boot),
         lambda: [torch.randn(boot.unet_batch_size, 4, h, h), torch.randint(0, 1000, (boot.unet_batch_size,)),
                  torch.randn(boot.unet_batch_size, boot.max_prompt_tokens, boot.text_hidden_size)],
         lambda m, x: m(x[0], x[1], encoder_hidden_states=x[2]).sample, unet_loss),
        ("vae_encode", lambda: nets.build_vae(boot), lambda: [torch.rand(vae_batch, 3, side, side) * 2 - 1],
         lambda m, x: m.encode(x[0]).latent_dist.mean, None),
        ("vae_decode", lambda: nets.build_vae(boot), lambda: [torch.randn(vae_batch, 4, h, h)],
         lambda m, x: m.decode(x[0]).sample, None),
    ]  # fmt: skip
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, build, make_inputs, run, loss in cases:
            row = {"threads": threads, **compare(name, build, make_inputs, run, args.repeats, loss)}
            print(f"{threads} thread(s) {name}: contiguous {row['contiguous_ms']:.1f} ms, channels_last "
                  f"{row['channels_last_ms']:.1f} ms ({row['speed_up']:.2f}x), max |diff| {row['max_abs_diff']:.2e}", flush=True)  # fmt: skip
            rows.append(row)
    precision = [densenet_precision(clf, threads, args.repeats) for threads in args.threads]
    for row in precision:
        print(f"{row['threads']} thread(s) DenseNet step: float32 {row['float32_ms']:.1f} ms, bfloat16 autocast "
              f"{row['bfloat16_ms']:.1f} ms ({row['speed_up']:.2f}x)", flush=True)  # fmt: skip
    parallel = side_by_side(clf, max(args.threads), args.repeats)
    print(f"DenseNet steps/s of the machine: one process on {parallel['processes']} threads "
          f"{parallel['one_process_steps_per_s']:.1f}, {parallel['processes']} one-thread processes "
          f"{parallel['one_thread_processes_steps_per_s']:.1f} ({parallel['gain']:.2f}x)")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"config": args.config, "cpu_threads": args.threads, "rows": rows, "precision": precision,
              "side_by_side": parallel}  # fmt: skip
    (out / "results.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
