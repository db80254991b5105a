"""Config at the edge: schema validation, defaults, and agreement of schema, config.yaml and dataclasses."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml
from helpers.data import REPO

from ltaug.backbone.bootstrap_config import BootstrapConfig
from ltaug.backbone.diffusion import DiffusionConfig
from ltaug.backbone.latents import LatentsConfig
from ltaug.common.config import SCHEMA, from_dict, validate_config
from ltaug.common.errors import ConfigError
from ltaug.data.classes import LongTailConfig
from ltaug.data.demo import DemoConfig
from ltaug.data.manifest import DataConfig
from ltaug.evaluation.baselines import BaselinesConfig
from ltaug.evaluation.classifier import ClassifierConfig
from ltaug.evaluation.features import FidConfig
from ltaug.evaluation.intervals import IntervalsConfig
from ltaug.method.cam import CamConfig
from ltaug.method.fusion import FusionConfig
from ltaug.method.generate import GenerateConfig
from ltaug.method.iterated import ILConfig
from ltaug.method.pairing import PairingConfig

CONFIG = REPO / "config.yaml"
SECTIONS = {
    "demo": DemoConfig,
    "data": DataConfig,
    "long_tail": LongTailConfig,
    "latents": LatentsConfig,
    "diffusion": DiffusionConfig,
    "diffusion.bootstrap": BootstrapConfig,
    "il": ILConfig,
    "cam": CamConfig,
    "pairing": PairingConfig,
    "fusion": FusionConfig,
    "generate": GenerateConfig,
    "baselines": BaselinesConfig,
    "eval.classifier": ClassifierConfig,
    "eval.fid": FidConfig,
    "eval.intervals": IntervalsConfig,
}
# keys the Snakefile uses itself, or that a rule fills in from elsewhere (latents.image_size, threads)
WORKFLOW_ONLY = {
    ("demo", "enabled"), ("demo", "outdir"), ("diffusion", "bootstrap"),
    ("diffusion.bootstrap", "image_size"), ("diffusion.bootstrap", "threads"), ("il", "threads"),
    ("latents", "shards"), ("cam", "splits"), ("cam", "shards"),
    ("eval.classifier", "threads"), ("eval.fid", "threads"),
}  # fmt: skip


def section(config: dict, name: str) -> dict:
    for part in name.split("."):
        config = config[part] if "properties" not in config else config["properties"][part]
    return config


def plain(value):
    return list(value) if isinstance(value, tuple) else value


def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def test_demo_config_is_valid():
    config = validate_config(yaml.safe_load(CONFIG.read_text()))
    assert config["demo"]["enabled"] is True
    for name, cls in SECTIONS.items():  # every section builds its stage's dataclass, as the rules pass it
        stage_keys = {k: v for k, v in section(config, name).items() if (name, k) not in WORKFLOW_ONLY}
        from_dict(cls, stage_keys, name)


def test_defaults_fill_an_empty_config():
    config = validate_config({})
    assert config["outdir"] == "results"
    assert config["long_tail"]["head_min_prevalence"] == 0.15
    assert config["data"]["labels"]["train"] == "data/demo/train.csv"


@pytest.mark.parametrize(
    "config,pattern",
    [
        ({"data": {"imageroot": "x"}}, r"unknown key data\.imageroot; the keys allowed here are: .*image_root"),
        ({"colour": 1}, r"unknown key colour"),
        ({"demo": {"image_size": "big"}}, r"demo\.image_size: 'big' is not of type 'integer'"),
        ({"demo": {"image_size": 100}}, r"demo\.image_size: 100 is not a multiple of 8"),
        ({"long_tail": {"tail_max_prevalence": "0.02"}}, r"long_tail\.tail_max_prevalence: '0\.02' is not of type 'number'"),
        ({"data": {"check_images": "all"}}, r"data\.check_images: 'all' is not one of"),
        ({"demo": {"prevalence": {"Nodule": 1.5}}}, r"demo\.prevalence\.Nodule: 1\.5 is greater than or equal to the maximum"),
        ({"data": {"labels": {"train": "a.csv"}}}, r"data\.labels: no val, test split; give data\.labels\.val"),
    ],
)
def test_bad_config_names_the_key(config, pattern):
    """The schema's rules, then the data section's cross-key rules (DataConfig), as the workflow checks them."""
    with pytest.raises(ConfigError, match=pattern):
        DataConfig(**validate_config(config)["data"])


def test_every_schema_key_has_type_default_and_description():
    def walk(node: dict, key: str):
        for name, sub in node.get("properties", {}).items():
            where = f"{key}.{name}".lstrip(".")
            assert "description" in sub, f"{where} has no description"
            assert "type" in sub, f"{where} has no type"
            if not where.startswith(("data.labels.", "data.split_lists.", "data.carve.")):  # optional per-split entries
                assert "default" in sub, f"{where} has no default"
            if sub.get("type") == "object":
                walk(sub, where)

    walk(schema(), "")


def test_every_schema_key_is_a_dataclass_field():
    """The other direction (every field is a schema key with the schema's default) is checked at import by
    config_section; here: no key of a section is ignored by its stage, unless the workflow reads it."""
    for name, cls in SECTIONS.items():
        props = section(schema(), name)["properties"]
        fields = {f.name for f in dataclasses.fields(cls) if (name, f.name) not in WORKFLOW_ONLY}
        assert {k for k in props if (name, k) not in WORKFLOW_ONLY} == fields, name
        assert cls.config_key == name


def test_a_default_that_is_not_the_schemas_fails_at_import():
    from ltaug.common.config import config_section

    @dataclasses.dataclass(frozen=True)
    class Cam:
        method: str = "layercam"
        batch_size: int = 32  # the schema says 64

    with pytest.raises(TypeError, match=r"Cam\.batch_size defaults to 32, but .* gives cam\.batch_size the default 64"):
        config_section("cam")(Cam)

    @dataclasses.dataclass(frozen=True)
    class Typo:
        batchsize: int = 64

    with pytest.raises(TypeError, match=r"Typo\.batchsize: not a key of config section 'cam'"):
        config_section("cam")(Typo)


@pytest.mark.parametrize(
    "cls, values, pattern",
    [
        (CamConfig, {"batch_size": 0}, r"^cam\.batch_size: 0 is less than the minimum of 1 \(latents per forward pass"),
        (CamConfig, {"batch_size": 64.0}, r"^cam\.batch_size: 64\.0 is not of type 'integer'"),
        (CamConfig, {"batch_size": True}, r"^cam\.batch_size: True is not of type 'integer'"),
        (ILConfig, {"lr": float("nan")}, r"^il\.lr: nan is not of type 'number'"),
        (ILConfig, {"threads": 0}, r"^il\.threads: 0 is less than the minimum of 1"),
        (PairingConfig, {"space": "pixels", "k": 0}, r"^pairing\.k: 0 is less .*\npairing\.space: 'pixels' is not one of"),
        (GenerateConfig, {"steps": [0, 80], "num_steps": 75}, r"^generate\.steps: 80 is more than generate\.num_steps = 75"),
    ],
)
def test_a_stage_dataclass_is_checked_by_the_schema_however_it_is_built(cls, values, pattern):
    """Direct calls, from_dict (as the stages read their --params) and config.yaml give the same message."""
    with pytest.raises(ConfigError, match=pattern):
        cls(**values)
    with pytest.raises(ConfigError, match=pattern):
        from_dict(cls, values, cls.config_key)
    nested = values
    for part in reversed(cls.config_key.split(".")):
        nested = {part: nested}
    if "threads" not in values and cls is not GenerateConfig:  # threads is the rule's; steps <= num_steps is the class's
        with pytest.raises(ConfigError, match=pattern.replace("^", r"^config: ").replace(r"\n", r"\nconfig: ")):
            validate_config(nested)


def test_the_schemas_choices_are_the_codes():
    """Where the code dispatches on a key's value, its table and the schema's enum agree."""
    from ltaug.method import cam_methods
    from ltaug.backbone import diffusion
    from ltaug.method import fusion
    from ltaug.common import images
    from ltaug.backbone import latents
    from ltaug.method import networks as models
    from ltaug.data.labels import SPLITS

    choices = {
        "cam.method": ["eigencam", *cam_methods.CLASS_SPECIFIC], "diffusion.dtype": list(diffusion.DTYPES),
        "fusion.label_policy": ["auto", *fusion.LABEL_POLICIES], "fusion.decode": list(fusion.DECODES),
        "data.check_images": list(images.CHECKS), "latents.mode": list(latents.MODES),
        "il.classifier": list(models.ARCHITECTURES), "il.classifier_stem": list(models.STEMS),
    }  # fmt: skip
    for key, values in choices.items():
        assert section(schema(), key)["enum"] == values, key
    for key in ("cam.splits", "eval.fid.real_splits"):
        assert section(schema(), key)["items"]["enum"] == list(SPLITS), key
    from ltaug.common.variants import SCHEMES

    assert section(schema(), "eval.schemes")["items"]["enum"] == list(SCHEMES)


def test_every_config_key_is_commented():
    lines = CONFIG.read_text().splitlines()
    keyed = [l for l in lines if re.match(r"^\s*[\w ]+:", l) and not l.lstrip().startswith("#")]
    uncommented = [l for l in keyed if "#" not in l and not l.rstrip().endswith(":")]
    assert not uncommented, f"config.yaml keys without a comment: {uncommented}"


def test_command_line_overrides_take_the_schema_types():
    from ltaug.common.config import coerce_overrides

    schema = yaml.safe_load(SCHEMA.read_text())
    # as Snakemake's --config hands them over: every nested scalar a string (YAML BaseLoader)
    given = {"fusion": {"tau_h": "0.6", "label_policy": "union", "exclusive_class": "1"},
             "eval": {"classifier": {"seeds": ["0", "1", "2"], "cache_images": "false"}, "methods": "[baseline, ours]"},
             "demo": {"prevalence": {"Nodule": "0.05"}}, "il": {"lam": "high"}}  # fmt: skip
    out = coerce_overrides(given, schema)
    assert out["fusion"] == {"tau_h": 0.6, "label_policy": "union", "exclusive_class": "1"}  # strings stay strings
    assert out["eval"]["classifier"] == {"seeds": [0, 1, 2], "cache_images": False}
    assert out["eval"]["methods"] == ["baseline", "ours"] and out["demo"]["prevalence"] == {"Nodule": 0.05}
    assert out["il"]["lam"] == "high"  # not a number: left for validation, which names --config
    config = yaml.safe_load(CONFIG.read_text())
    with pytest.raises(ConfigError, match=r"^--config: il\.lam: 'high' is not of type 'number'"):
        validate_config(config, SCHEMA, source="config.yaml", overrides={"il": {"lam": "high"}})
    merged = validate_config(config, SCHEMA, source="config.yaml", overrides={"fusion": {"tau_h": "0.6"}})
    assert merged["fusion"]["tau_h"] == 0.6 and merged["fusion"]["n_per_class"] == config["fusion"]["n_per_class"]
