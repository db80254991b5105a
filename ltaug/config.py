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


def _types(schema: dict) -> set[str]:
    kind = schema.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def coerce_overrides(values: Any, schema: dict) -> Any:
    """``--config`` values with the types the schema gives their keys.

    Snakemake parses ``--config KEY=VALUE`` with YAML's BaseLoader, so every scalar inside a
    nested value arrives as a string (``fusion="{tau_h: 0.6}"`` gives ``{"tau_h": "0.6"}``).
    Where the schema expects a number, integer, boolean or array, a string is read as YAML;
    a key the schema allows to be a string keeps it. What still has the wrong type is left
    for validation to name.
    """
    if isinstance(values, dict) and "object" in _types(schema):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, value in values.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else {})
            out[key] = coerce_overrides(value, sub)
        return out
    if isinstance(values, str) and _types(schema) & {"number", "integer", "boolean", "array", "object"} and "string" not in _types(schema):
        try:
            parsed = yaml.safe_load(values)
        except yaml.YAMLError:
            return values
        return values if isinstance(parsed, str) else coerce_overrides(parsed, schema)
    if isinstance(values, str) and "enum" in schema and values not in schema["enum"]:
        try:
            parsed = yaml.safe_load(values)
        except yaml.YAMLError:
            return values
        return parsed if any(parsed is v or (type(parsed) is type(v) and parsed == v) for v in schema["enum"]) else values
    if isinstance(values, list) and "array" in _types(schema):
        return [coerce_overrides(v, schema.get("items", {})) for v in values]
    return values


def _describe(error: jsonschema.ValidationError, source: str, overrides: dict | None = None) -> str:
    key = _key(error.absolute_path)
    node = overrides
    for part in error.absolute_path:
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None and error.absolute_path:
        source = "--config"  # the value came from the command line, not from a config file
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


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validate_config(
    config: dict, schema_path: str | Path = SCHEMA, source: str = "config", overrides: dict | None = None
) -> dict:
    """Return ``config`` with defaults filled in, or raise ConfigError naming the first bad key.

    ``overrides``: Snakemake's ``--config`` values (already merged into ``config`` as strings);
    they are coerced to the schema's types (:func:`coerce_overrides`) and merged again, and an
    error in one of them names ``--config`` rather than the config file."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    config = copy.deepcopy(config)
    if overrides:
        overrides = coerce_overrides(copy.deepcopy(overrides), schema)
        config = _merge(config, overrides)
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e, source, overrides) for e in errors))
    from ltaug.data import DataConfig  # the data section's cross-key rules (which splits come from where)

    from_dict(DataConfig, config["data"], "data")
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
