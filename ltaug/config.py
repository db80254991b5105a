"""Configuration at the edge: JSON-Schema validation of config.yaml, defaults, and stage dataclasses.

The workflow validates the whole config once (``workflow/rules/common.smk``); each rule
then hands its stage only the section it depends on, as JSON, and the stage turns it
into its typed dataclass with :func:`from_dict`. The raw dict never travels deeper.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from ltaug.errors import ConfigError

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

T = TypeVar("T")


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _fill_defaults(config: dict, schema: dict) -> None:
    """Insert the schema's defaults for missing keys, recursing into objects (in place)."""
    for name, sub in schema.get("properties", {}).items():
        if name not in config and "default" in sub:
            config[name] = copy.deepcopy(sub["default"])
        if isinstance(config.get(name), dict) and sub.get("type") == "object":
            _fill_defaults(config[name], sub)


def _describe(error: jsonschema.ValidationError, source: str) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(error.schema.get("properties", {})))
        where = f"{key}." if error.absolute_path else ""
        return (
            f"{source}: unknown key {', '.join(where + e for e in extra)}; "
            f"the keys allowed here are: {known}. Fix the spelling or remove it "
            f"(every key is described in workflow/schemas/config.schema.yaml)."
        )
    desc = error.schema.get("description", "")
    hint = f" ({desc})" if desc else ""
    return f"{source}: {key}: {error.message}{hint}"


def validate_config(config: dict, schema_path: str | Path = SCHEMA, source: str = "config") -> dict:
    """Return ``config`` with defaults filled in, or raise ConfigError naming the first bad key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    config = copy.deepcopy(config)
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e, source) for e in errors))
    return config


def from_dict(cls: type[T], values: dict[str, Any], key: str) -> T:
    """Build the stage dataclass ``cls`` from one config section; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{', '.join(f'{key}.{u}' for u in unknown)}: unknown key for this stage; "
            f"known keys: {', '.join(sorted(known))}."
        )
    return cls(**values)


def from_json(cls: type[T], text: str, key: str) -> T:
    """:func:`from_dict` on a JSON object, as rules pass it on the command line."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: --params is not valid JSON ({exc})") from exc
    return from_dict(cls, values, key)
