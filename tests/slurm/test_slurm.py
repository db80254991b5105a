"""The tiny workflow on a real SLURM cluster: profiles/slurm with snakemake-executor-plugin-slurm.

A single-node cluster (tests/helpers/slurm_cluster.py: Debian's slurm-wlm and munge, accounting
off, one GPU declared without a device) runs whatever the tiny config of tests/workflow/test_workflow.py
builds. The run must end with the results of a local run (compared value for value), and
`scontrol show job` must show every job of a rule that declares `resources: gpu=1`
submitted with a GPU request and every other job without one, with the CPUs, memory and
time limit the profile gives it. The cluster run encodes and maps every split in 2 shards
(latents.shards, cam.shards) and gathers them: the local run, unsharded, must still agree.
Which rules need a GPU is read from a dry run, not listed here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from helpers.data import REPO
from helpers.same_outputs import differences
from helpers import slurm_cluster
from helpers.slurm_cluster import ClusterUnavailable, SlurmCluster, install
from helpers.workflow import planned_jobs, snakemake, write_config
from helpers.slurm_workflow import PROFILE, slurm_snakemake, submitted_jobs


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


def profile_resources(rule: str, declared: dict, attempt: int = 1) -> dict:
    """What the job should get: the profile's set-resources, else the rule's own, else default-resources;
    the profile's values are expressions of ``attempt`` (runtime and memory grow with each retry)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    own = {k: int(declared[k]) for k in ("mem_mb", "runtime") if k in declared}
    values = {**profile["default-resources"], **own, **(profile.get("set-resources") or {}).get(rule, {})}
    for key in ("mem_mb", "runtime"):
        if isinstance(values[key], str):
            values[key] = eval(values[key], {"__builtins__": {}}, {"attempt": attempt, "min": min, "max": max})
    return values


def sbatch_calls(log: str) -> dict[str, str]:
    """Rule -> the sbatch command line of its (first) job, from the plugin's --verbose log."""
    calls = {}
    for call in re.findall(r"sbatch call: (.*)", log):
        rule = re.search(r"--comment '?rule_(\w+?)(?:_wildcards_[^' ]*)?'?(?: |$)", call)[1]
        calls.setdefault(rule, call)
    return calls


def options(call: str) -> dict[str, str]:
    """The options of an sbatch line that size a job: time, memory, CPUs, GPUs (the partition is the cluster's default)."""
    found = {}
    for name, pattern in (("-t", r" -t '?(\d+)'?"), ("--mem", r" --mem '?(\d+)'?"), ("--cpus-per-task", r" --cpus-per-task[= ](\d+)"),
                          ("--gpus", r" --gpus=(\S+)"), ("--gres", r" --gres=(\S+)")):  # fmt: skip
        if m := re.search(pattern, call):
            found[name] = m[1]
    return found


GPU_SHARED = ("slurm_partition", "gpu", "gres")  # the values every GPU rule reads from one place (profiles/slurm)


def test_the_profile_sizes_every_gpu_rule_and_grows_with_each_attempt(tmp_path):
    """Without a cluster: every GPU rule of a dry run routes through the shared GPU values, no CPU rule does,
    and every runtime and memory of the profile grows with the attempt."""
    write_config(tmp_path, latents={"shards": 2}, cam={"shards": 2}, images={"shards": 2})  # every rule, gather_* included
    rules = rule_blocks(snakemake(tmp_path, "--dry-run").stdout)
    gpu_rules = {r for r, b in rules.items() if int(b["resources"].get("gpu", 0)) > 0}
    text = (PROFILE / "config.yaml").read_text()
    profile = yaml.safe_load(text)
    per_rule = profile["set-resources"]
    assert gpu_rules and gpu_rules <= set(per_rule), f"GPU rules without resources: {gpu_rules - set(per_rule)}"
    for rule, values in per_rule.items():
        assert rule in rules, f"{rule}: not a rule of the workflow"
        shared = [key for key in GPU_SHARED if key in values]
        assert shared == (list(GPU_SHARED) if rule in gpu_rules else []), rule
        assert "gpu_model" not in values or rule in gpu_rules, rule
    for rule in gpu_rules:  # one value for all: the aliases of the first GPU rule's anchors
        assert re.search(rf"^  {rule}:.*\n(?:    .*\n)*?    slurm_partition: [&*]gpu_partition", text, re.M), rule
    assert profile["retries"] >= 1
    for rule in [*per_rule, "(default)"]:
        sizes = [profile_resources(rule, {}, attempt) for attempt in (1, 2, 3)]
        for key in ("runtime", "mem_mb"):
            assert sizes[0][key] < sizes[1][key] < sizes[2][key], f"{rule}: {key} does not grow with the attempt"


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

    assert {"split_classes", "check_class_names", "report"} <= local  # seconds of work: no submission

    # the sbatch lines of a GPU rule and a CPU rule, as the plugin wrote them
    calls = sbatch_calls(log)
    gpu, cpu = options(calls["train_il"]), options(calls["pair_neighbours"])
    il, pairs = profile_resources("train_il", {}), profile_resources("pair_neighbours", {})
    assert gpu == {"-t": str(il["runtime"]), "--mem": str(il["mem_mb"]), "--cpus-per-task": str(rules["train_il"]["threads"]),
                   "--gpus": "1"}, calls["train_il"]  # fmt: skip
    assert cpu == {"-t": str(pairs["runtime"]), "--mem": str(pairs["mem_mb"]),
                   "--cpus-per-task": str(rules["pair_neighbours"]["threads"])}, calls["pair_neighbours"]  # fmt: skip
    print(f"sbatch, GPU rule: {calls['train_il']}\nsbatch, CPU rule: {calls['pair_neighbours']}")

    assert differences(workdir / "results", tiny_reference / "results") == []


@pytest.fixture(scope="session")
def slurm_programs():
    """slurm-wlm and munge on this machine (installed if need be), for what starts a cluster of its own; skips as
    the cluster fixture does where they cannot be had."""
    try:
        install()
    except ClusterUnavailable as exc:
        pytest.skip(f"no SLURM test cluster: {exc}")


@pytest.mark.slurm
@pytest.mark.workflow
@pytest.mark.slow
def test_the_slurm_benchmark_runs_the_tiny_workflow_on_its_own_cluster(slurm_programs, tiny_reference, tmp_path):
    """benchmarks/slurm_cluster.py against the session's local run (--local, so the local run is not repeated), up to
    the fused latents of draw 0 (the whole workflow on SLURM is the test above): it exits 0 and reports the SLURM
    jobs per rule (train_il with a GPU, pair_neighbours without), their times, and results equal to the local run's."""
    out = tmp_path / "slurm" / "tiny.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "slurm_cluster.py"), "--local", str(tiny_reference),
                           "--target", "results/fused/ours/draw0/latents.zarr", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=2400)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["results_equal"] is True and report["local_s"] is None and report["slurm_s"] > 0
    assert report["targets"] == ["results/fused/ours/draw0/latents.zarr"]
    assert "evaluate_classifier" not in report["jobs_per_rule"]  # nothing after the targets
    per_rule = report["jobs_per_rule"]
    assert report["jobs_total"] == sum(r["jobs"] for r in per_rule.values()) > 0
    assert per_rule["train_il"]["jobs"] == per_rule["train_il"]["gpu_jobs"] == 1
    assert per_rule["pair_neighbours"]["gpu_jobs"] == 0 and per_rule["pair_neighbours"]["jobs"] >= 1
    assert all(r["running_s"] >= 0 and r["queued_s"] >= 0 for r in per_rule.values())
    assert "| train_il | 1 | 1 |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("uid,apt,reason", [(1000, "/usr/bin/apt-get", "not root"), (0, None, "no apt-get")])
def test_without_root_or_apt_get_the_cluster_is_unavailable_and_says_why(monkeypatch, uid, apt, reason):
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: uid)
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name: apt if name == "apt-get" else None)
    monkeypatch.setattr(slurm_cluster.subprocess, "run", None)  # nothing may be run
    with pytest.raises(ClusterUnavailable, match=rf"munged, slurmctld, slurmd, sbatch.* not installed and {reason}"):
        install()
