"""The tiny workflow on a real SLURM cluster: profiles/slurm with snakemake-executor-plugin-slurm.

A single-node cluster (tests/slurm/cluster.py: Debian's slurm-wlm and munge, accounting
off, one GPU declared without a device) runs whatever the tiny config of test_workflow.py
builds. The run must end with the results of a local run (compared value for value), and
`scontrol show job` must show every job of a rule that declares `resources: gpu=1`
submitted with a GPU request and every other job without one, with the CPUs, memory and
time limit the profile gives it. The cluster run encodes and maps every split in 2 shards
(latents.shards, cam.shards) and gathers them: the local run, unsharded, must still agree.
Which rules need a GPU is read from a dry run, not listed here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from same_outputs import differences
from slurm import cluster as slurm_cluster
from slurm.cluster import ClusterUnavailable, SlurmCluster, install
from test_workflow import planned_jobs, snakemake, write_config

PROFILE = REPO / "profiles" / "slurm"
# On top of the profile, the settings of a cluster without accounting, polled quickly
# (2 cores, short jobs), with the threads of the local run (--cores 2), so that the
# two runs compute the same numbers.
CLUSTER_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                 "--max-threads", "2")  # fmt: skip


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


def rule_blocks(dry_run: str) -> dict[str, dict]:
    """Rule -> {"threads": int, "resources": {name: value}} from a dry run's job blocks."""
    rules, current = {}, None
    for line in dry_run.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            current = rules.setdefault(m[1], {"threads": 1, "resources": {}})
        elif current is not None and (m := re.match(r"^\s+threads: (\d+)$", line)):
            current["threads"] = int(m[1])
        elif current is not None and (m := re.match(r"^\s+resources: (.*)$", line)):
            current["resources"].update(kv.split("=", 1) for kv in m[1].split(", "))
    return rules


def submitted_jobs(cluster: SlurmCluster, log: str) -> list[dict]:
    """This run's SLURM jobs (named by the executor's run ID) with the rule in their comment."""
    run_id = re.search(r"SLURM run ID: (\S+)", log)[1]
    jobs = [j for j in cluster.jobs() if j.get("JobName") == run_id]
    for job in jobs:
        job["rule"] = re.match(r"^rule_(\w+?)(?:_wildcards_.*)?$", job["Comment"])[1]
        job["gpu"] = any("gpu" in v for k, v in job.items() if k.startswith("TresPer"))
    return jobs


def profile_resources(rule: str, declared: dict) -> dict:
    """What the job should get: the profile's set-resources, else the rule's own, else default-resources."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    own = {k: int(declared[k]) for k in ("mem_mb", "runtime") if k in declared}
    return {**profile["default-resources"], **own, **(profile.get("set-resources") or {}).get(rule, {})}


@pytest.fixture(scope="session")  # as tiny_reference, and before it: a skip costs no local run
def cluster(tmp_path_factory):
    try:
        install()
    except ClusterUnavailable as exc:
        pytest.skip(f"no SLURM test cluster: {exc}")
    with SlurmCluster(tmp_path_factory.mktemp("slurm-cluster"), gpus=1) as running:
        yield running


@pytest.mark.slurm
@pytest.mark.workflow
@pytest.mark.slow
def test_tiny_workflow_on_slurm_matches_a_local_run(cluster, tiny_reference, tmp_path):
    workdir = tmp_path / "on-slurm"
    write_config(workdir, latents={"shards": 2}, cam={"shards": 2})  # scatter/gather: the local run has one shard
    plan = snakemake(workdir, "--dry-run")  # the local view of the same config: jobs, threads, resources
    planned, rules = planned_jobs(plan), rule_blocks(plan.stdout)
    gpu_rules = {r for r, b in rules.items() if int(b["resources"].get("gpu", 0)) > 0}
    assert gpu_rules and set(planned) - gpu_rules - {"all"}, "the tiny workflow has GPU and CPU rules"

    result = slurm_snakemake(workdir, cluster)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"{log}\n{cluster.logs()}"

    local = set(re.findall(r"^localrule (\w+):$", log, re.M))  # rules without a job of their own (all)
    jobs = submitted_jobs(cluster, log)
    counts = {r: sum(j["rule"] == r for j in jobs) for r in {j["rule"] for j in jobs}}
    assert counts == {r: n for r, n in planned.items() if r not in local}
    for job in jobs:
        rule = job["rule"]
        want = profile_resources(rule, rules[rule]["resources"])
        assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), job
        assert job["gpu"] == (rule in gpu_rules), f"{rule}: GPU request {job.get('TresPerJob')}"
        assert int(job["CPUs/Task"]) == rules[rule]["threads"], rule  # cpus_per_task: threads
        assert job["MinMemoryNode"] == f"{want['mem_mb']}M", rule
        assert job["TimeLimit"] == f"{want['runtime'] // 60:02d}:{want['runtime'] % 60:02d}:00", rule

    assert differences(workdir / "results", tiny_reference / "results") == []


@pytest.mark.parametrize("uid,apt,reason", [(1000, "/usr/bin/apt-get", "not root"), (0, None, "no apt-get")])
def test_without_root_or_apt_get_the_cluster_is_unavailable_and_says_why(monkeypatch, uid, apt, reason):
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: uid)
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name: apt if name == "apt-get" else None)
    monkeypatch.setattr(slurm_cluster.subprocess, "run", None)  # nothing may be run
    with pytest.raises(ClusterUnavailable, match=rf"munged, slurmctld, slurmd, sbatch.* not installed and {reason}"):
        install()
