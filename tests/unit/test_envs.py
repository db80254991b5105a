"""The conda environment files pin exactly what pyproject.toml pins."""

from __future__ import annotations

import tomllib

import yaml
from helpers.data import REPO


def pins(requirements) -> dict[str, str]:
    out = {}
    for req in requirements:
        name, version = req.split("==")
        out[name.strip().lower()] = version.strip()
    return out


def test_env_files_parse_and_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = pins(project["dependencies"])
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files
    for path in env_files:
        env = yaml.safe_load(path.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        assert pins(pip) == wanted, path.name
        python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
        assert project["requires-python"] == ">=" + python.split("=")[1]
