"""The tiny workflow on a SLURM cluster (helpers.slurm_cluster) through the cluster profile, and the jobs it submitted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers.data import REPO
from helpers.slurm_cluster import SlurmCluster


PROFILE = REPO / "profiles" / "slurm"


# On top of the profile, the settings of a cluster without accounting, polled quickly
# (2 cores, short jobs), with the threads of the local run (--cores 2), so that the
# two runs compute the same numbers.
CLUSTER_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                 "--max-threads", "2", "--verbose")  # fmt: skip  (--verbose: the plugin logs each sbatch line)


def slurm_snakemake(workdir: Path, cluster: SlurmCluster, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """`snakemake --executor slurm --workflow-profile profiles/slurm` on the tiny config in ``workdir``."""
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--executor", "slurm", "--workflow-profile", str(PROFILE),
        *CLUSTER_FLAGS, *args,
    ]  # fmt: skip
    env = cluster.env
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the jobs' python
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def submitted_jobs(cluster: SlurmCluster, log: str) -> list[dict]:
    """This run's SLURM jobs (named by the executor's run ID) with the rule in their comment."""
    run_id = re.search(r"SLURM run ID: (\S+)", log)[1]
    jobs = [j for j in cluster.jobs() if j.get("JobName") == run_id]
    for job in jobs:
        job["rule"] = re.match(r"^rule_(\w+?)(?:_wildcards_.*)?$", job["Comment"])[1]
        job["gpu"] = any("gpu" in v for k, v in job.items() if k.startswith("TresPer"))
    return jobs
