"""Command line: ``python -m ltaug STAGE [options]``; every workflow rule calls one stage.

Each stage takes the config section it depends on as ``--params JSON`` (the rule's
``params:``), its inputs and outputs as paths, and ``--threads``. Bad input ends the
run with one message on stderr that names the file, row or key, and exit status 1.
The stages and their options are in :mod:`ltaug.cli_method` and :mod:`ltaug.cli_eval`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from ltaug.cli import STAGES
from ltaug.common.errors import LtaugError

for _module in ("ltaug.cli_method", "ltaug.cli_eval"):  # importing them registers their stages, in this order
    importlib.import_module(_module)

# the stages that read the data set's image files: each maps > 8-bit pixels by data.window (--window)
READS_IMAGES = {name for name, s in STAGES.items() if s.reads_images}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ltaug", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, s in STAGES.items():
        p = stages.add_parser(name, help=s.help)
        p.add_argument("--params", default="{}", help="the stage's config section as JSON (defaults if omitted)")
        p.add_argument("--threads", type=int, default=1, help="worker threads or processes")
        if s.reads_images:
            p.add_argument("--window", default="null", help="data.window as JSON: [lo, hi] for > 8-bit images, null = each image's range")
        s.arguments(p)
        p.set_defaults(run=s.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if hasattr(args, "window"):
            from ltaug.common.images import set_window

            set_window(json.loads(args.window))
        args.run(args)
    except LtaugError as exc:
        print(f"error in stage {args.stage}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.stage} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
