"""Per-rule times of a workflow run, from Snakemake's benchmark files.

    python benchmarks/evaluate_times.py [WORKDIR] [--stages baselines eval report] [--out benchmarks/evaluate_times]

Reads WORKDIR/benchmarks/<stage>/*.tsv (default: this checkout, the stages of the evaluation)
and prints wall-clock seconds, CPU seconds and peak memory per rule, with totals; writes the
table to <workdir name>.csv in ``--out`` (benchmarks/evaluate_times). On a machine shared with other work,
CPU seconds are the better estimate of the time on an idle one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def rule_times(workdir: str | Path, stages: list[str] | None = None) -> pd.DataFrame:
    """One row per benchmark file of WORKDIR/benchmarks/<stage>/ (every stage folder when ``stages`` is None): the
    stage, the rule's job (the file's name), its wall-clock and CPU seconds and peak memory, unrounded."""
    root = Path(workdir) / "benchmarks"
    rows = []
    for folder in [root / s for s in stages] if stages is not None else sorted(p for p in root.glob("*") if p.is_dir()):
        for tsv in sorted(folder.glob("*.tsv")):
            b = pd.read_csv(tsv, sep="\t").iloc[-1]
            rows.append({"stage": folder.name, "rule": tsv.stem, "wall_s": float(b["s"]), "cpu_s": float(b["cpu_time"]),
                         "max_rss_mb": float(b["max_rss"])})  # fmt: skip
    return pd.DataFrame(rows, columns=["stage", "rule", "wall_s", "cpu_s", "max_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", default=str(REPO), help="a workflow run's directory")
    parser.add_argument("--stages", nargs="+", default=["baselines", "eval", "report"],
                        help="stage folders of WORKDIR/benchmarks to read")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "evaluate_times"), help="directory of the CSV file")
    args = parser.parse_args()
    table = rule_times(args.workdir, args.stages)
    if table.empty:
        raise SystemExit(f"no benchmark files under {args.workdir}/benchmarks/{{{','.join(args.stages)}}}")
    for column, digits in (("wall_s", 1), ("cpu_s", 1), ("max_rss_mb", 0)):
        table[column] = [round(v, digits) for v in table[column]]
    total = {"stage": "", "rule": "total", "wall_s": table["wall_s"].sum(), "cpu_s": table["cpu_s"].sum(), "max_rss_mb": table["max_rss_mb"].max()}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    print(table.to_string(index=False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{Path(args.workdir).resolve().name}.csv", index=False)


if __name__ == "__main__":
    main()
