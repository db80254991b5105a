"""presets/: complete configurations for the public data sets at the paper's scale.

Each preset must pass what the workflow checks before any job starts (the schema, the data
and long-tail sections, the variants and Table 1's rows), set every section itself, make the
rows of the paper's Table 1 (DenseNet121 at 224 px, 3 seeds, RoentGen@75, Ours@0/1/5 and the
paper's configuration), read its data set as docs/datasets.md says, and share the method's
settings with the other presets, so that their Table 1s compare.
"""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from helpers.data import REPO

from ltaug.common.config import load_schema, validate_config
from ltaug.common.variants import expand_methods, resolve
from ltaug.data.classes import LongTailConfig
from ltaug.data.manifest import DataConfig
from ltaug.evaluation.classifier import DENSENET121, ClassifierConfig
from ltaug.method.cam import CamConfig
from ltaug.method.fusion import FusionConfig
from ltaug.method.generate import GenerateConfig
from ltaug.method.iterated import ILConfig, build_model
from ltaug.method.pairing import PairingConfig

PRESETS = {p.stem: p for p in sorted((REPO / "presets").glob("*.yaml"))}
# the heading of each data set's section in docs/datasets.md
DATASET_PAGE = {"mimic-cxr-lt": "MIMIC-CXR-JPG", "nih-cxr14": "NIH ChestX-ray14", "chexpert": "CheXpert", "padchest": "PadChest"}
# what a preset may set for its own data set; every other key is the method's and the same in all
OWN = {"data", "long_tail", "fusion.exclusive_class"}


def load(name: str) -> dict:
    return yaml.safe_load(PRESETS[name].read_text())


def validated(name: str) -> dict:
    return validate_config(load(name), REPO / "workflow" / "schemas" / "config.schema.yaml", source=str(PRESETS[name]))


def flat(values: dict, prefix: str = "") -> dict:
    """{"fusion.tau_h": 0.3, ...}: every leaf of a config by its dotted key (lists and variants are leaves)."""
    out = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key != "variants" and prefix.count(".") < 1:
            out.update(flat(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def test_there_is_a_preset_for_each_public_data_set():
    assert set(PRESETS) == set(DATASET_PAGE)


@pytest.mark.parametrize("name", sorted(DATASET_PAGE))
def test_a_preset_is_a_complete_valid_configuration_at_the_paper_s_scale(name):
    raw = load(name)
    assert set(raw) == set(load_schema()["properties"]), "every section set in the file, none left to defaults"
    config = validated(name)
    DataConfig(**config["data"])
    LongTailConfig(**config["long_tail"])
    variants = resolve(config)
    rows = expand_methods(config["eval"]["methods"], variants, config["generate"]["num_steps"], config["eval"]["schemes"])
    paper = ["roentgen@75", "ours@0", "ours@1", "ours@5", "ours-paper@0", "ours-paper@1", "ours-paper@5"]
    sets = ["oracle", "resample", "smote", *paper]
    assert rows == ["baseline", *sets, "balanced", *(f"balanced+{s}" for s in sets), "logit-adjusted",
                    *(f"logit-adjusted+{s}" for s in sets)]  # every scheme, the third one too  # fmt: skip
    assert config["eval"]["intervals"]["references"] == ["resample"]
    assert 0 < config["eval"]["oracle"]["holdout"] < 1, "real data: the oracle's images are a held-out share"
    for sections in variants.values():  # every variant's stages accept their settings
        CamConfig(**{k: v for k, v in sections["cam"].items() if k not in ("splits", "shards")})
        PairingConfig(**sections["pairing"])
        FusionConfig(**sections["fusion"])
        GenerateConfig(**sections["generate"])
    paper_fusion = variants["ours-paper"]["fusion"]
    assert variants["ours-paper"]["cam"]["method"] == "eigencam" and paper_fusion["decode"] == "d"
    assert (paper_fusion["tau_h"], paper_fusion["tau_l"], paper_fusion["tail_mask"]) == (0.4, 0.4, "cells")

    assert not config["demo"]["enabled"] and config["diffusion"]["pretrained"]  # a local RoentGen directory
    assert config["latents"]["image_size"] == 512 and config["diffusion"]["dtype"] == "float16"
    classifier = ClassifierConfig(**{**config["eval"]["classifier"], "weights": ""})  # the file is the user's
    assert classifier.architecture() == DENSENET121 and classifier.image_size == 224
    assert classifier.seeds == [0, 1, 2] and classifier.steps * classifier.batch_size >= 1_000_000

    il = ILConfig(**config["il"])  # the IL networks fit RoentGen's 4 x 64 x 64 latents
    model = build_model(il, (4, 64, 64), 26)
    with torch.no_grad():
        zs, recon, logits = model(torch.zeros(1, 4, 64, 64))
    assert zs.shape == (1, il.embed_channels, 64, 64) and recon.shape == (1, 4, 64, 64) and logits.shape == (1, 26)
    assert sum(p.numel() for p in model.parameters()) < 10**6  # docs/cost.md's IL figures assume small networks


@pytest.mark.parametrize("name", sorted(DATASET_PAGE))
def test_a_preset_reads_its_data_set_as_the_data_set_page_says(name):
    """The data block is the page's block for that data set (tests/unit/test_public_datasets.py reads files in its layout)."""
    page = (REPO / "docs" / "datasets.md").read_text()
    section = re.search(rf"^## {re.escape(DATASET_PAGE[name])}.*?```yaml\n(.*?)```", page, re.S | re.M)[1]
    documented = yaml.safe_load(section)["data"]
    data = load(name)["data"]
    assert {k: data.get(k) for k in documented} == documented


def test_the_presets_share_the_method_s_settings():
    """Only the data, the head / tail split and the class that means "no finding" differ between presets."""
    configs = {name: flat(validated(name)) for name in PRESETS}
    first, *others = configs
    for name in others:
        differ = {k for k in configs[first].keys() | configs[name].keys() if configs[first].get(k) != configs[name].get(k)}
        assert {k for k in differ if k.split(".")[0] not in OWN and k not in OWN} == set(), name


@pytest.mark.parametrize("name", sorted(DATASET_PAGE))
def test_the_class_that_means_no_finding_is_one_the_data_set_has(name):
    """fusion.exclusive_class names the data set's own label for an image without a finding."""
    config = load(name)
    names = {"mimic-cxr-lt": "No Finding", "nih-cxr14": "No Finding", "chexpert": "No Finding", "padchest": "normal"}
    assert config["fusion"]["exclusive_class"] == names[name]
    assert names[name] not in config["data"].get("ignore_labels", [])
