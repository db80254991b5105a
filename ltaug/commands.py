"""Command line: ``python -m ltaug STAGE [options]``; every workflow rule calls one stage.

Each stage's options, and the rule command that passes them, follow from its declaration
(:mod:`ltaug.cli`); the stages are in :mod:`ltaug.cli_method` and :mod:`ltaug.cli_eval`. Bad
input ends the run with one message on stderr that names the file, row or key, and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time

from ltaug import cli_eval, cli_method
from ltaug.cli import add_options, prepare, stage_command as _stage_command, stages
from ltaug.common.errors import LtaugError

STAGES = stages(*cli_method.STAGES.values(), *cli_eval.STAGES.values())  # the method's, then the evaluation's

# the stages that read the data set's image files: each maps > 8-bit pixels by data.window (--window)
READS_IMAGES = {name for name, s in STAGES.items() if s.reads_images}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ltaug", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, s in STAGES.items():
        add_options(commands.add_parser(name, help=s.help), s)
    return parser


def stage_command(name: str, omit: tuple[str, ...] = ()) -> str:
    """The shell command of the rule that runs stage ``name`` (:func:`ltaug.cli.stage_command`)."""
    return _stage_command(name, STAGES, omit)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = STAGES[args.stage]
    start = time.perf_counter()
    try:
        s.run(prepare(s, args))
    except LtaugError as exc:
        print(f"error in stage {args.stage}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.stage} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
