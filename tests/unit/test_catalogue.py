"""The workflow catalogue's conventions: a licence, a citation of the paper, the catalogue's usage file and a
test configuration that passes the workflow's checks (snakefmt and --lint: tests/workflow/test_workflow.py)."""

from __future__ import annotations

import tomllib

import yaml
from helpers.data import REPO

from ltaug.common.config import validate_config
from ltaug.common.variants import expand_methods, resolve
from ltaug.data.classes import LongTailConfig
from ltaug.data.manifest import DataConfig


def test_the_licence_is_the_one_the_package_declares():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "MIT" and (REPO / "LICENSE").read_text().startswith("MIT License")
    assert yaml.safe_load((REPO / "CITATION.cff").read_text())["license"] == declared


def test_the_citation_file_cites_the_paper_the_method_comes_from():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["authors"]
    paper = cff["preferred-citation"]
    assert paper["title"] == "Long Tail Image Generation Through Feature Space Augmentation and Iterated Learning"
    assert [a["family-names"] for a in paper["authors"]] == ["Elberg", "Parra", "Petrache"]
    assert {"type": "other", "value": "arXiv:2405.01705", "description": "the arXiv identifier"} in paper["identifiers"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert cff["version"] == version


def test_the_catalogue_usage_file_has_the_keys_the_catalogue_reads():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"} and "--configfile" in usage["mandatory-flags"]["flags"]
    stack = usage["software-stack-deployment"]
    assert set(stack) == {"conda", "apptainer", "apptainer+conda"} and all(isinstance(v, bool) for v in stack.values())
    assert stack["conda"] and (REPO / "envs" / "ltaug.yaml").is_file()


def test_the_test_configuration_passes_the_workflow_s_checks():
    config = validate_config(yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text()), source=".test")
    DataConfig(**config["data"])
    LongTailConfig(**config["long_tail"])
    rows = expand_methods(config["eval"]["methods"], resolve(config), config["generate"]["num_steps"],
                          config["eval"]["schemes"])  # fmt: skip
    sets = ["oracle", "resample", "smote", "roentgen@4", "ours@0", "ours@1", "ours-paper@0"]
    assert rows == ["baseline", *sets, "balanced", *(f"balanced+{s}" for s in sets)]
