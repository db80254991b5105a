"""A single-node SLURM cluster on this machine, for tests and benchmarks.

    python tests/helpers/slurm_cluster.py [--gpus 1] -- COMMAND ...   # run COMMAND against a fresh cluster

Debian's ``slurm-wlm`` and ``munge`` (installed with apt-get when missing; root only)
run as one munged, one slurmctld and one slurmd, each started in the foreground by this
module and stopped by its pid. Everything they write (key, sockets, state, logs,
slurm.conf) lives in one temporary directory; ports are picked free, so two clusters can
run side by side and nothing under /etc is touched. Accounting is off
(``accounting_storage/none``): ``sacct`` has nothing to say and job states come from
``squeue``/``scontrol``, kept for ``MinJobAge`` seconds after a job ends.

The node declares ``gpus`` GPUs without a device (gres.conf ``File=/dev/null``), so jobs
submitted with ``--gpus=1`` are scheduled as on a GPU node. It works with Debian 12's
slurm-wlm 22.05 without cgroups: ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``.

Client commands find the cluster through ``SLURM_CONF``. The Snakemake job step
(snakemake-executor-plugin-slurm-jobstep) drops every ``SLURM_*`` variable before its
inner ``srun``, so :attr:`SlurmCluster.env` also puts a ``srun`` first on PATH that sets
``SLURM_CONF`` and execs the real one.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "srun")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be installed or started here (not root, no apt-get); the message says why."""


def missing_programs() -> list[str]:
    return [p for p in (*DAEMONS, *CLIENTS) if shutil.which(p) is None]


def install(log=sys.stderr) -> str:
    """Install slurm-wlm and munge with apt-get unless every program is already there.

    Returns what was done. Raises ClusterUnavailable where it cannot be done (not root,
    no apt-get), RuntimeError (with apt-get's output) where apt-get fails.
    """
    missing = missing_programs()
    if not missing:
        return "slurm-wlm and munge already installed"
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"{', '.join(missing)} not installed and not root: cannot apt-get install {' '.join(PACKAGES)}")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(f"{', '.join(missing)} not installed and no apt-get to install {' '.join(PACKAGES)} with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
        print("+ " + " ".join(cmd), file=log, flush=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    still = missing_programs()
    if still:
        raise RuntimeError(f"apt-get installed {' '.join(PACKAGES)} but {', '.join(still)} are still not on PATH")
    return f"installed {' '.join(PACKAGES)} with apt-get"


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    """``with SlurmCluster(root) as cluster:`` one controller and one node, until the block ends.

    ``cpus`` and ``memory_mb`` default to this machine's, but at least 2 CPUs and 32 GB
    (slurmd accepts more than there is with config_overrides; memory is not a consumable
    here, CR_Core, so the profile's requests need only fit); ``min_job_age`` is how long
    finished jobs stay visible to squeue and scontrol (the executor's status checks and
    the tests read them there).
    """

    def __init__(self, root: str | Path, *, gpus: int = 1, cpus: int | None = None,
                 memory_mb: int | None = None, min_job_age: int = 3600):  # fmt: skip
        self.root = Path(root).resolve()
        self.gpus, self.cpus = gpus, cpus or max(2, os.cpu_count() or 1)
        self.memory_mb = memory_mb or max(32_000, _memory_mb())
        self.min_job_age = min_job_age
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ configuration

    def write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log", "munge", "bin"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(
            f"""\
ClusterName=ltaug{ctld_port}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MinJobAge={self.min_job_age}
ReturnToService=2
SlurmdParameters=config_overrides
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        # a GPU without a device: scheduled and counted, nothing is bound
        (r / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.node} Name=gpu Count={self.gpus} File=/dev/null\n")
        # the job step's inner srun runs without SLURM_* variables (see the module docstring)
        srun = r / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands (sbatch, squeue, snakemake --executor slurm)."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    # ------------------------------------------------------------------ daemons

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        log.close()

    def _wait(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(f'{n} exited ({c})' for n, c in dead.items())}" if dead else f"timeout {timeout} s"
                raise RuntimeError(f"SLURM test cluster: waiting for {what}: {why}\n{self.logs()}")
            time.sleep(0.2)

    def _query(self, *cmd: str) -> str:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        return done.stdout if done.returncode == 0 else ""

    def start(self) -> None:
        self.write_config()
        r = self.root
        socket_path = r / "munge" / "munge.socket"
        self._start("munged", ["munged", "--foreground", "--force", f"--key-file={r}/munge/munge.key",
                               f"--socket={socket_path}", f"--pid-file={r}/munge/munged.pid",
                               f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/munged.seed"])  # fmt: skip
        self._wait("munged's socket", socket_path.exists)
        self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: "UP" in self._query("scontrol", "ping"))
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait("the node to be idle", lambda: self._query("sinfo", "-h", "-N", "-o", "%t").strip() == "idle")

    def stop(self) -> None:
        """Cancel the jobs still queued or running, then stop the daemons this object started,
        by pid: SIGTERM, then SIGKILL after 20 s."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            scancel = ["scancel", "--full", "--user", getpass.getuser()]
            subprocess.run(scancel, env=self.env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._query("squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING").strip():
                time.sleep(0.5)
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def logs(self, tail: int = 2000) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ jobs

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller still knows (finished ones for min_job_age s): `scontrol show job`."""
        text = self._query("scontrol", "show", "job", "--oneliner")
        jobs = []
        for line in text.splitlines():
            fields = {}
            for token in line.split():
                if "=" in token:
                    key, value = token.split("=", 1)
                    fields.setdefault(key, value)
            if "JobId" in fields:
                jobs.append(fields)
        return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=1, help="GPUs the node declares (no devices)")
    parser.add_argument("--root", help="directory for the cluster's files, kept (default: a temporary one, removed)")
    parser.add_argument("command", nargs="+", help="run with SLURM_CONF pointing at the cluster")
    args = parser.parse_args(argv)
    print(install(), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ltaug-slurm-") as tmp:
        with SlurmCluster(args.root or tmp, gpus=args.gpus) as cluster:
            return subprocess.run(args.command, env=cluster.env).returncode


if __name__ == "__main__":
    sys.exit(main())
