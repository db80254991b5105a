"""Wall time of the tiny workflow on a single-node SLURM cluster against a local run, and jobs per rule.

    python benchmarks/slurm_cluster.py [--shards 1] [--out benchmarks/slurm/tiny.json] [--local DIR] [--target PATH ...]

What tests/slurm/test_slurm.py runs, timed: the tiny config of tests/workflow/test_workflow.py, once
locally (`--cores 2 --resources gpu=1`, as the workflow tests run it) and once through
`--executor slurm --workflow-profile profiles/slurm` on the cluster of
tests/helpers/slurm_cluster.py (installed with apt-get if missing; needs root), in fresh
temporary directories. Reported: both wall times, the cluster's start-up, the SLURM jobs
submitted per rule (from `scontrol show job`) with their summed queue and run times,
whether the two runs' results are equal (tests/helpers/same_outputs.py), and the load average, as
other work on the machine slows both runs. ``--shards`` sets latents.shards for both runs.
``--local DIR`` compares with a finished local run of the tiny config in DIR instead of making one
(its time is then not measured). ``--target`` runs only what the given outputs need on both (the
results are then compared on what the SLURM run made). Writes JSON to ``--out`` and a Markdown
table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers.same_outputs import differences  # noqa: E402
from helpers.slurm_cluster import SlurmCluster, install  # noqa: E402
from helpers.slurm_workflow import CLUSTER_FLAGS, slurm_snakemake, submitted_jobs  # noqa: E402
from helpers.workflow import snakemake, write_config  # noqa: E402


def _seconds(job: dict, start: str, end: str) -> float:
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job[start])).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=1, help="latents.shards of both runs")
    parser.add_argument("--out", default=str(REPO / "benchmarks/slurm/tiny.json"), help="JSON file to write")
    parser.add_argument("--local", default="", help="a finished local run of the tiny config to compare with (default: run one)")
    parser.add_argument("--target", nargs="+", default=[], help="outputs to make (default: the whole workflow)")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "shards": args.shards,
              "targets": args.target, "cluster_flags": list(CLUSTER_FLAGS),
              "load_average": {"before": os.getloadavg()}}  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="ltaug-bench-slurm-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        report["install"] = install()
        report["install_s"] = round(time.perf_counter() - t, 1)

        if args.local:
            local, report["local_s"] = Path(args.local), None  # made before: not timed here
        else:
            local = tmp / "local"
            write_config(local, latents={"shards": args.shards})
            t = time.perf_counter()
            result = snakemake(local, *args.target)
            report["local_s"] = round(time.perf_counter() - t, 1)
            assert result.returncode == 0, result.stderr
            report["load_average"]["after_local"] = os.getloadavg()

        t = time.perf_counter()
        with SlurmCluster(tmp / "cluster", gpus=1) as cluster:
            report["cluster_start_s"] = round(time.perf_counter() - t, 1)
            remote = tmp / "slurm"
            write_config(remote, latents={"shards": args.shards})
            t = time.perf_counter()
            result = slurm_snakemake(remote, cluster, *args.target)
            report["slurm_s"] = round(time.perf_counter() - t, 1)
            assert result.returncode == 0, result.stderr + cluster.logs()
            jobs = submitted_jobs(cluster, result.stdout + result.stderr)
        report["load_average"]["after_slurm"] = os.getloadavg()
        per_rule: dict[str, dict] = {}
        for job in jobs:
            row = per_rule.setdefault(job["rule"], {"jobs": 0, "gpu_jobs": 0, "queued_s": 0.0, "running_s": 0.0})
            row["jobs"] += 1
            row["gpu_jobs"] += job["gpu"]
            row["queued_s"] += _seconds(job, "SubmitTime", "StartTime")
            row["running_s"] += _seconds(job, "StartTime", "EndTime")
        report["jobs_per_rule"] = per_rule
        report["jobs_total"] = len(jobs)
        diffs = differences(local / "results", remote / "results")
        if args.target:  # the SLURM run made the targets' part of the workflow: compared on what it made
            diffs = [d for d in diffs if not d.endswith(f": only in {local / 'results'}")]
        report["results_equal"] = diffs == []

    out.write_text(json.dumps(report, indent=2) + "\n")
    local_time = f"{report['local_s']} s" if report["local_s"] is not None else "(given)"
    lines = [
        f"tiny workflow{' up to ' + ', '.join(args.target) if args.target else ''}, latents.shards={args.shards}: "
        f"local {local_time}, SLURM {report['slurm_s']} s "
        f"(+ {report['cluster_start_s']} s cluster start), results equal: {report['results_equal']}",
        "",
        "| rule | jobs | with --gpus | queued (s, sum) | running (s, sum) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r} | {v['jobs']} | {v['gpu_jobs']} | {v['queued_s']:.0f} | {v['running_s']:.0f} |"
              for r, v in per_rule.items()]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(report["load_average"]))


if __name__ == "__main__":
    main()
