#!/usr/bin/env bash
# `make demo` on a fresh clone of this repository: the environment set-up and the
# workflow timed separately, plus the per-rule times Snakemake measured.
# Usage: benchmarks/make_demo.sh [OUT.json]   (default benchmarks/results/make_demo.json)
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
out=$(realpath -m "${1:-$repo/benchmarks/results/make_demo.json}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/ltaug"
cd "$work/ltaug"

t0=$(date +%s.%N)
make env > "$work/env.log" 2>&1     # the set-up half of `make demo`
t1=$(date +%s.%N)
make demo > "$work/demo.log" 2>&1   # with the environment made: the workflow alone
t2=$(date +%s.%N)

mkdir -p "$(dirname "$out")"
.venv/bin/python - "$t0" "$t1" "$t2" "$out" <<'PY'
import json, platform, os, sys
from pathlib import Path
import pandas as pd

t0, t1, t2 = map(float, sys.argv[1:4])
rules = {p.stem: round(float(pd.read_csv(p, sep="\t")["s"].iloc[0]), 2) for p in sorted(Path("benchmarks").glob("*/*.tsv"))}
classes = json.loads(Path("results/data/classes.json").read_text())
result = {
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "install_s": round(t1 - t0, 1),
    "workflow_s": round(t2 - t1, 1),
    "rule_s": rules,
    "train_prevalence": {c: round(p, 4) for c, p in classes["prevalence"].items()},
    "head": classes["head"],
    "tail": classes["tail"],
    "images_per_split": classes["n"],
}
Path(sys.argv[4]).write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
PY
