"""The real Snakefile on the tiny test config (.test/config/config.yaml) in a temporary directory: run it, and count the jobs it plans."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from helpers.data import REPO


# the tiny configuration: .test/config/config.yaml, which a user can run too (its header says how)
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


TINY = yaml.safe_load(TEST_CONFIG.read_text())


TINY_FUSION, TINY_GENERATE = TINY["fusion"], TINY["generate"]


# the tiny config's sets less the oracle, whose fresh images a real data set has only with eval.oracle.holdout
WITHOUT_ORACLE = {"methods": [m for m in TINY["eval"]["methods"] if m != "oracle"]}


TAIL = ["Nodule", "Fracture", "Calcification of the Aorta", "Pneumoperitoneum"]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--resources", "gpu=1", "--show-failed-logs",
        *args,
    ]  # fmt: skip
    # the environment's bin directory is taken off PATH, as when .venv/bin/snakemake runs unactivated: the rules
    # must find the python that runs Snakemake themselves (Snakefile, shell.prefix)
    venv = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and os.path.abspath(p) != venv)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PATH": path})


SETS = ["Oracle", "Resample", "SMOTE", "RoentGen@4", "Ours@0", "Ours@1", "Ours-paper@0"]  # the tiny config's sets
ROWS = ["Baseline", *SETS, "Balanced", *(f"Balanced+{s}" for s in SETS)]  # under its schemes, plain and balanced
DRAWS = 2  # draws of every set: one per classifier seed


def write_config(workdir: Path, **sections) -> dict:
    """``workdir``/config.yaml: the tiny configuration with ``sections`` merged over its sections."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values} if isinstance(values, dict) else values
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run."""
    table = result.stdout.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


# Table 1 of the tiny config: its references, and its columns in order
REFERENCES = ["resample"]


COLUMNS = ["method", "row", "scheme", "set", "variant", "metric", "avg_tail_kid", "avg_tail_fd", "avg_tail_precision",
           "avg_tail_recall", "avg_tail_density", "avg_tail_coverage", "avg_memorised",
           "head_map", "head_map_lo", "head_map_hi", "head_map_std", "tail_map", "tail_map_lo", "tail_map_hi",
           "tail_map_std", "auroc_macro", "auroc_macro_lo", "auroc_macro_hi", "auroc_macro_std"]
COLUMNS += [f"delta_{what}_map_{ref}{part}" for ref in ("own", *REFERENCES) for what in ("tail", "head")
            for part in ("", "_lo", "_hi", "_p", "_p_holm")]
COLUMNS += ["oracle_share", "oracle_share_lo", "oracle_share_hi", "oracle_share_defined",
            "novelty_pixels_new", "novelty_features_new", "novelty_pixels_median_ratio", "novelty_features_median_ratio",
            "novelty_own_source", "tail_label_fidelity", "tail_detector_fidelity", "tail_detector_fidelity_lo",
            "tail_detector_fidelity_hi", "detector_fpr_synthetic", "n_synthetic", "draws", "seeds"]  # fmt: skip
