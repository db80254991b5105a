"""Every shell command of the README and docs/ still works: each runs here in its dry-run form.

A page's ```bash blocks are what users copy. ``snakemake`` commands run with ``-n`` (the DAG is
built, the config validated, nothing executed) in a copy of the repository, where
``my_config.yaml`` is the demo config; ``make`` commands with ``-n``; benchmark scripts with
``--help``. A command with no dry-run form here fails the test, so a new one gets one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page:line, argv) of every command line in the pages' shell blocks, comments dropped."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in BLOCK.finditer(text):
            first = text[: block.start()].count("\n") + 2
            for offset, line in enumerate(block.group(1).splitlines()):
                words = shlex.split(line, comments=True)
                if words:
                    found.append((f"{page.relative_to(REPO)}:{first + offset}", words))
    return found


def dry_run(words: list[str]) -> list[str] | None:
    """The command's dry-run form; None where this test knows none."""
    tool, rest = words[0], words[1:]
    if tool == "make":
        return ["make", "-n", *rest]
    if tool == "snakemake":
        return words if "--lint" in rest or "-n" in rest else [*words, "-n"]
    if tool == "python" and rest and rest[0].startswith("benchmarks/"):
        return [sys.executable, rest[0], "--help"]
    return None


COMMANDS = documented_commands()


def test_the_pages_have_commands():
    pages = {where.split(":")[0] for where, _ in COMMANDS}
    assert {"README.md", "docs/running.md", "docs/datasets.md", "docs/cost.md", "docs/development.md"} <= pages
    assert any(words[:2] == ["make", "test"] for _, words in COMMANDS if _.startswith("README.md"))  # what CI runs


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repository's files (as a clean clone has them) and my_config.yaml, the pages' own config."""
    root = tmp_path_factory.mktemp("docs") / "ltaug"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode == 0:  # a clone: what git tracks, and new files it does not ignore
        for name in filter(None, listed.stdout.split("\0")):
            if (REPO / name).is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, root / name)
    else:  # a copy without .git: everything but what a run or an install leaves behind
        outputs = {".git", ".venv", "results", "logs", ".snakemake", "data", ".pytest_cache"}
        shutil.copytree(REPO, root, ignore=lambda folder, names: [
            n for n in names if (Path(folder) == REPO and n in outputs) or n == "__pycache__" or n.endswith(".egg-info")
        ])  # fmt: skip
    shutil.copy(REPO / "config.yaml", root / "my_config.yaml")
    return root


@pytest.mark.workflow
@pytest.mark.parametrize("where, words", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_runs_dry(checkout, where, words):
    argv = dry_run(words)
    assert argv is not None, f"{where}: {shlex.join(words)} has no dry-run form in tests/workflow/test_docs.py; add one"
    if "--sdm" in words and words[words.index("--sdm") + 1] == "conda" and shutil.which("conda") is None:
        pytest.skip(f"{where}: --sdm conda needs conda, which this machine lacks")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{where}: {shlex.join(argv)} failed\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if argv[0] == "snakemake" and "-n" in argv:
        assert "This was a dry-run" in result.stdout + result.stderr or "Nothing to be done" in result.stdout + result.stderr
