"""Configuration at the edge: JSON-Schema validation of config.yaml, defaults, and stage dataclasses.

The workflow validates the whole config once (``workflow/rules/common.smk``); each rule
then hands its stage only the section it depends on, as JSON, and the stage turns it
into its typed dataclass with :func:`from_dict`. The raw dict never travels deeper.

The schema (``workflow/schemas/config.schema.yaml``) is the one statement of every key's
type, range, choices and default. A stage's dataclass is tied to its section with
:func:`config_section`: every instance, however it is built, is checked against the
section's schema, and its defaults must equal the schema's. A dataclass's own
``__post_init__`` keeps only what JSON Schema cannot say (one key against another, a
file that must exist, a regular expression that must compile).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import numbers
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from ltaug.common.errors import ConfigError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

T = TypeVar("T")


def _is_integer(checker, value) -> bool:
    """An integer, and only that: not a bool, and not a float such as 64.0 (JSON Schema's
    own "integer" takes 64.0, which a stage would then pass to range())."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(checker, value) -> bool:
    """A finite number (a NaN would pass every minimum and maximum), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number}),
)


# the schema of a field that is not a config key: the CPU threads a rule gives its stage
THREADS = {"type": "integer", "minimum": 1, "description": "torch CPU threads (the rule's threads)"}


@functools.cache
def load_schema(path: str | Path = SCHEMA) -> dict:
    """The config schema, parsed once per process (shared: read it, never change it)."""
    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def section_schema(key: str, schema: dict | None = None) -> dict:
    """The schema of the dotted config section ``key`` (e.g. ``eval.classifier``)."""
    node = load_schema() if schema is None else schema
    for part in key.split("."):
        try:
            node = node["properties"][part]
        except KeyError:
            raise KeyError(f"{SCHEMA}: no config section {key!r}") from None
    return node


def _plain(value: Any) -> Any:
    """A value as JSON (and so the schema) sees it: tuples are arrays."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_section(values: dict[str, Any], key: str, schema: dict) -> None:
    """ConfigError naming every key of ``values`` that ``schema`` (one section's) rejects."""
    errors = sorted(Validator(schema).iter_errors(_plain(values)), key=lambda e: list(e.absolute_path))
    lines = []
    for error in errors:
        path = list(error.absolute_path)
        desc = error.schema.get("description") or (schema["properties"].get(path[0], {}).get("description") if path else "")
        lines.append(f"{_key([key, *path])}: {error.message}" + (f" ({desc})" if desc else ""))
    if lines:
        raise ConfigError("\n".join(lines))


def config_section(key: str, extra: dict[str, dict] | None = None):
    """Class decorator (above ``@dataclass``): the stage dataclass of config section ``key``.

    Every instance is checked against the section's schema before the class's own
    ``__post_init__`` runs, so a bad value gets the same message whether it came from
    config.yaml, ``--config`` or a direct call. ``extra``: schema entries of fields that are
    not config keys (a rule fills them in, e.g. ``threads``). At import, every field must be a
    key of the section (or of ``extra``) and its default must be the schema's default:
    the schema states it, the dataclass repeats it where a reader of the code needs it,
    and the two cannot drift apart.
    """

    def wrap(cls: type[T]) -> type[T]:
        node = section_schema(key)
        properties = {**node["properties"], **(extra or {})}
        schema = {"type": "object", "properties": properties}
        for field in dataclasses.fields(cls):
            if field.name not in properties:
                raise TypeError(f"{cls.__name__}.{field.name}: not a key of config section {key!r} in {SCHEMA}")
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                continue  # no default of its own: the schema's is filled in before the class is built
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            if "default" in properties[field.name] and _plain(default) != properties[field.name]["default"]:
                raise TypeError(
                    f"{cls.__name__}.{field.name} defaults to {default!r}, but {SCHEMA} gives "
                    f"{key}.{field.name} the default {properties[field.name]['default']!r}; make them agree"
                )

        def check(self) -> None:
            check_section({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, key, schema)

        own = cls.__dict__.get("__post_init__")
        if own is not None:  # the schema first, so that the class's own checks see values of the right types

            def __post_init__(self) -> None:
                check(self)
                own(self)

            cls.__post_init__ = __post_init__
        else:  # the dataclass's __init__ calls no __post_init__: check after it
            init = cls.__init__

            @functools.wraps(init)
            def __init__(self, *args, **kwargs) -> None:
                init(self, *args, **kwargs)
                check(self)

            cls.__init__ = __init__
        cls.config_key = key
        return cls

    return wrap


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
    """One line: where (``source``, the file or the section), the key, what is wrong, and the key's description."""
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
    error in one of them names ``--config`` rather than the config file. The schema's rules only: the sections'
    cross-key rules are their dataclasses' (DataConfig, LongTailConfig), which the workflow builds next."""
    schema = load_schema(schema_path)
    config = copy.deepcopy(config)
    if overrides:
        overrides = coerce_overrides(copy.deepcopy(overrides), schema)
        config = _merge(config, overrides)
    _fill_defaults(config, schema)
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e, source, overrides) for e in errors))
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


def section_values(text: str, key: str) -> dict[str, Any]:
    """The config section ``key`` as rules pass it on the command line (--params, JSON), as a dict."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: --params is not valid JSON ({exc})") from exc


def from_json(cls: type[T], text: str, key: str) -> T:
    """:func:`from_dict` on a JSON object, as rules pass it on the command line."""
    return from_dict(cls, section_values(text, key), key)
