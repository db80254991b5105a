"""Resume after a killed job: the tiny workflow is killed with SIGKILL (Snakemake and all its
jobs at once, as when a node dies) while one job writes its output; `snakemake --unlock` and
`snakemake --rerun-incomplete` then finish it, rerunning only what had not finished, and the
results equal those of an uninterrupted run, value for value. Both runs stop after the
killed stage (`--until`): what follows it is no different from an uninterrupted run's."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.same_outputs import differences
from helpers.workflow import planned_jobs, snakemake, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

HOOK = Path(__file__).resolve().parents[1] / "helpers" / "resume_hook"  # sitecustomize.py: holds a job still (see there)


def finished(log: str) -> Counter:
    """Jobs per rule that a Snakemake run reports as finished."""
    return Counter(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", log, re.M))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def snakemake_ancestor(pid: int, workdir: Path) -> int:
    """The Snakemake process (of the run in ``workdir``) that ``pid`` descends from."""
    while pid > 1:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"snakemake" in cmdline and str(workdir).encode() in cmdline:
            return pid
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    raise AssertionError(f"no Snakemake process of {workdir} above the paused job")


# A case per stage: the stage's job is killed at its `at`-th complete output, just before
# that output is renamed into place (ltaug.common.io.atomic_path). Add a case for another stage here.
# train_il at 2: generation 1 is saved, gen_2.pt is being written; the rerun resumes from gen_1.pt.
@pytest.mark.parametrize("stage,at", [("encode_latents", 1), ("train_il", 2)])
def test_killed_run_resumes_to_the_results_of_an_uninterrupted_one(tiny_reference, tmp_path, monkeypatch, stage, at):
    workdir = tmp_path / "killed"
    write_config(workdir)
    until = ("--until", stage)
    planned = planned_jobs(snakemake(workdir, "--dry-run", *until))
    marker = tmp_path / "paused"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LTAUG_PAUSE_STAGE", stage)
    monkeypatch.setenv("LTAUG_PAUSE_AT", str(at))
    monkeypatch.setenv("LTAUG_PAUSE_MARKER", str(marker))

    runs = []
    thread = threading.Thread(target=lambda: runs.append(snakemake(workdir, *until)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 540
    while not marker.exists():
        assert thread.is_alive(), f"the run ended before {stage} wrote an output:\n{runs and runs[0].stderr}"
        assert time.monotonic() < deadline, f"{stage} never reached its output {at}"
        time.sleep(0.2)
    paused_pid, output = marker.read_text().split()
    victims = process_tree(snakemake_ancestor(int(paused_pid), workdir))
    for pid in victims:  # Snakemake first, then its jobs: all of it, as a lost node
        os.kill(pid, signal.SIGKILL)
    thread.join(60)
    (killed,) = runs
    assert killed.returncode == -signal.SIGKILL
    output = Path(output) if Path(output).is_absolute() else workdir / output
    assert not output.exists()  # killed before its rename: nothing that looks complete
    assert list(output.parent.glob(f".{output.name}.tmp-{paused_pid}"))  # the killed job's partial output
    assert any((workdir / ".snakemake/incomplete").iterdir())  # what --rerun-incomplete acts on
    done_before = finished(killed.stderr)
    assert stage not in done_before or done_before[stage] < planned[stage]

    monkeypatch.delenv("LTAUG_PAUSE_STAGE")
    unlock = snakemake(workdir, "--unlock")
    assert unlock.returncode == 0, unlock.stderr
    resumed = snakemake(workdir, "--rerun-incomplete", *until)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # every planned job ran exactly once over the two runs: nothing finished was redone
    assert finished(resumed.stderr) + done_before == Counter(planned)
    reference = tiny_reference / "results"  # which has the later stages' results besides
    diffs = differences(workdir / "results", reference)
    assert [d for d in diffs if not d.endswith(f": only in {reference}")] == []
    assert output.exists()  # the killed job's output, redone (and compared above)
    if stage == "train_il":  # it continued from the generation saved before the kill, not from scratch
        assert "resuming after generation 1" in (workdir / "logs/il/train_il.log").read_text()
    assert [str(p) for p in (workdir / "results").rglob("*.tmp-*")] == []
