"""Command line: ``python -m ltaug STAGE [options]``; every workflow rule calls one stage.

Each stage takes the config section it depends on as ``--params JSON`` (the rule's
``params:``), its inputs and outputs as paths, and ``--threads``. Bad input ends the
run with one message on stderr that names the file, row or key, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ltaug.errors import LtaugError

SPLITS = ("train", "val", "test")


def _demo_dataset(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.demo import DemoConfig, make_demo

    make_demo(args.outdir, from_json(DemoConfig, args.params, "demo"), workers=args.threads)


def _prepare_data(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.data import DataConfig, prepare_data

    frame = prepare_data(from_json(DataConfig, args.params, "data"), args.manifest, args.threads)
    counts = frame["split"].value_counts()
    print(f"{args.manifest}: {len(frame)} images (" + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS) + ")")


def _split_classes(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.data import LongTailConfig, write_classes

    split = write_classes(from_json(LongTailConfig, args.params, "long_tail"), args.manifest, args.classes)
    for group in ("head", "medium", "tail"):
        names = getattr(split, group)
        print(f"{group}: " + ", ".join(f"{c} ({split.prevalence[c]:.3f})" for c in names))


def _bootstrap_diffusion(args: argparse.Namespace) -> None:
    from ltaug.bootstrap import BootstrapConfig, bootstrap_diffusion
    from ltaug.config import from_dict, from_json
    from ltaug.diffusion import DiffusionConfig, pick_device

    runtime = from_json(DiffusionConfig, args.diffusion, "diffusion")
    params = json.loads(args.params)
    params.setdefault("threads", args.threads)
    cfg = from_dict(BootstrapConfig, params, "diffusion.bootstrap")
    bootstrap_diffusion(args.manifest, args.model, args.samples, cfg, pick_device(runtime.device))


def _encode_latents(args: argparse.Namespace) -> None:
    from ltaug.config import from_json
    from ltaug.diffusion import DiffusionConfig, fingerprint, load_vae, pick_device
    from ltaug.data import read_manifest
    from ltaug.latents import LatentsConfig, encode_split

    runtime = from_json(DiffusionConfig, args.diffusion, "diffusion")
    cfg = from_json(LatentsConfig, args.params, "latents")
    device = pick_device(runtime.device)
    model = {"path": args.model, "fingerprint": fingerprint(args.model)}
    vae = load_vae(args.model, device)
    encode_split(read_manifest(args.manifest), args.split, vae, args.store, cfg, model, device,
                 threads=args.threads, source=args.manifest)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ltaug", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name: str, run, help: str) -> argparse.ArgumentParser:
        p = stages.add_parser(name, help=help)
        p.add_argument("--params", default="{}", help="the stage's config section as JSON (defaults if omitted)")
        p.add_argument("--threads", type=int, default=1, help="worker threads or processes")
        p.set_defaults(run=run)
        return p

    p = stage("demo_dataset", _demo_dataset, "draw the long-tailed demo data set")
    p.add_argument("--outdir", required=True, help="directory for images/, {train,val,test}.csv, boxes.csv")

    p = stage("prepare_data", _prepare_data, "validate the labels files and images, write the manifest")
    p.add_argument("--manifest", required=True, help="output manifest.csv")

    p = stage("split_classes", _split_classes, "split the classes into head, medium and tail")
    p.add_argument("--manifest", required=True, help="input manifest.csv")
    p.add_argument("--classes", required=True, help="output classes.json")
    p = stage("bootstrap_diffusion", _bootstrap_diffusion, "train the small demo Stable Diffusion model")
    p.add_argument("--manifest", required=True, help="input manifest.csv (its training split)")
    p.add_argument("--model", required=True, help="output diffusers directory")
    p.add_argument("--samples", required=True, help="output directory of sample grids and metrics.json")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device, dtype) as JSON")

    p = stage("encode_latents", _encode_latents, "encode one split into a Zarr store of VAE latents")
    p.add_argument("--manifest", required=True, help="input manifest.csv")
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory")
    p.add_argument("--split", required=True, help="train, val or test")
    p.add_argument("--store", required=True, help="output .zarr store")
    p.add_argument("--diffusion", default="{}", help="the diffusion section (device, dtype) as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        args.run(args)
    except LtaugError as exc:
        print(f"error in stage {args.stage}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.stage} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
