"""Command line: ``python -m ltaug STAGE [options]``; every workflow rule calls one stage.

Each stage takes the config section it depends on as ``--params JSON`` (the rule's
``params:``), its inputs and outputs as paths, and ``--threads``. Bad input ends the
run with one message on stderr that names the file, row or key, and exit status 1.
"""

from __future__ import annotations

import argparse
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
