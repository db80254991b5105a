"""The stages' command line, declared once: each stage's options, where its rule takes them from, and what it runs.

``@stage(name, help, *options, section=..., threads=..., torch=..., runtime=..., reads_images=...)``
declares a run function as ``python -m ltaug NAME``; each stage module lists its stages, in order, in its
``STAGES`` (:func:`stages`), and :mod:`ltaug.commands` joins the lists. From that one declaration follow

- the stage's argparse options (:func:`add_options`);
- its workflow rule's command line (:func:`stage_command`): every option with a rule value, as
  ``--name={input.name:q}`` and so on, then ``--params`` (the config section, the rule's
  ``params.cfg``), ``--diffusion``, ``--window``, ``--threads`` and the log;
- what the run function gets (:class:`Job`): the options by name, the config section built once
  as its dataclass, and the runtime (device, dtype, weight variant) picked once.

Threads are set in one place (:func:`ltaug.commands.main`): a stage that declares ``torch=True``
runs torch on its section's ``threads`` if the section has that key, else on ``--threads``.
The stages are in :mod:`ltaug.cli_method` (data to synthetic images) and :mod:`ltaug.cli_eval`
(baselines, evaluation, the report).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from collections.abc import Callable
from typing import Any, NamedTuple

SPLITS = ("train", "val", "test")
REQUIRED = object()  # an option without a default: the rule always passes it


@dataclasses.dataclass(frozen=True)
class Option:
    name: str  # the attribute of Job.args; the flag is --name with dashes
    help: str
    rule: str | None  # the rule's value: "input.latents" (a field, quoted), "{wildcards.a}@{wildcards.b}", None = CLI only
    type: Callable = str
    default: Any = REQUIRED
    many: bool = False  # one or more values (none either when it has a default)
    choices: tuple | None = None
    flag: bool = False  # a switch (store_true); never passed by a rule

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kwargs: dict[str, Any] = {"help": self.help}
        if self.flag:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = self.type
            if self.default is REQUIRED:
                kwargs["required"] = True
            else:
                kwargs["default"] = self.default
            if self.many:
                kwargs["nargs"] = "+" if self.default is REQUIRED else "*"
            if self.choices:
                kwargs["choices"] = self.choices
        parser.add_argument(self.flag_name, **kwargs)

    def command(self) -> str:
        """This option in the rule's shell command."""
        value = self.rule if "{" in self.rule else "{" + self.rule + ":q}"
        return f"{self.flag_name} {value}" if self.many else f"{self.flag_name}={value}"


def Input(name: str, help: str, **kw) -> Option:
    """An option whose rule passes its input ``name``."""
    return Option(name, help, f"input.{name}", **kw)


def Output(name: str, help: str, **kw) -> Option:
    """An option whose rule passes its output ``name``."""
    return Option(name, help, f"output.{name}", **kw)


def Param(name: str, help: str, **kw) -> Option:
    """An option whose rule passes its params ``name``."""
    return Option(name, help, f"params.{name}", **kw)


def Wildcard(name: str, help: str, **kw) -> Option:
    """An option whose rule passes its wildcard ``name``."""
    return Option(name, help, f"wildcards.{name}", **kw)


class Section(NamedTuple):
    key: str  # the config key, dotted ("eval.classifier")
    cls: str  # "module:Class" of its dataclass, imported when the stage runs


class Stage(NamedTuple):
    name: str
    help: str
    run: Callable[[Job], None]
    options: tuple[Option, ...]
    section: Section | None  # the config section --params holds
    threads: bool  # takes --threads (worker threads or processes; torch's with torch)
    torch: bool  # sets torch's CPU threads before it runs
    runtime: bool  # reads the diffusion section (--diffusion): device, dtype, weight variant
    reads_images: bool  # reads the data set's image files: maps > 8-bit pixels by data.window (--window)
    section_values: Callable[[argparse.Namespace], dict] | None  # values the options set in the section


def stage(name: str, help: str, *options: Option, section: tuple[str, str] | None = None, threads: bool = False,
          torch: bool = False, runtime: bool = False, reads_images: bool = False,
          section_values: Callable[[argparse.Namespace], dict] | None = None):  # fmt: skip
    """Declare the decorated function as the run function of stage ``name`` (see the module's docstring):
    the decorator returns the stage's :class:`Stage`, which a module lists in its ``STAGES`` (:func:`stages`)."""

    def declare(run: Callable[[Job], None]) -> Stage:
        names = [o.name for o in options]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {name} declares an option twice: {names}")
        return Stage(name, help, run, tuple(options), Section(*section) if section else None, threads or torch, torch,
                     runtime, reads_images, section_values)  # fmt: skip

    return declare


def stages(*declared: Stage) -> dict[str, Stage]:
    """{name: stage} in the order given; a name given twice is an error."""
    out: dict[str, Stage] = {}
    for s in declared:
        if s.name in out:
            raise ValueError(f"stage {s.name} is declared twice")
        out[s.name] = s
    return out


class Runtime(NamedTuple):
    device: object  # the torch.device (torch is imported by the stages, not at start-up)
    dtype: str  # diffusion.dtype, a name
    variant: str  # diffusion.variant: which weight files of the model directory to read


class Job(NamedTuple):
    """What a run function gets: its options, its config section and its runtime, each built once."""

    args: argparse.Namespace
    cfg: Any  # the section's dataclass (None for a stage without one)
    runtime: Runtime | None


def add_options(parser: argparse.ArgumentParser, s: Stage) -> None:
    """The stage's own options, then the ones its declaration implies."""
    for option in s.options:
        option.add_to(parser)
    if s.section:
        parser.add_argument("--params", default="{}", help=f"the {s.section.key} section as JSON (defaults if omitted)")
    if s.runtime:
        parser.add_argument("--diffusion", default="{}", help="the diffusion section (device, dtype, variant) as JSON")
    if s.reads_images:
        parser.add_argument("--window", default="null", help="data.window as JSON: [lo, hi] for > 8-bit images, null = each image's range")
    if s.threads:
        parser.add_argument("--threads", type=int, default=1, help="worker threads or processes")


def stage_command(name: str, stages: dict[str, Stage], omit: tuple[str, ...] = ()) -> str:
    """The shell command of stage ``name``'s rule, its values from the rule's fields; ``omit``: options left out."""
    s = stages[name]
    unknown = set(omit) - {o.name for o in s.options}
    if unknown:
        raise ValueError(f"stage {name} has no option {sorted(unknown)} to omit")
    parts = [f"python -m ltaug {name}"]
    parts += [o.command() for o in s.options if o.rule and o.name not in omit]
    if s.section:
        parts.append("--params={params.cfg:q}")
    if s.runtime:
        parts.append("--diffusion={params.diffusion:q}")
    if s.reads_images:
        parts.append("--window={params.window:q}")
    if s.threads:
        parts.append("--threads={threads}")
    return " ".join(parts) + " > {log} 2>&1"


def build_section(s: Stage, args: argparse.Namespace):
    """The stage's config section from --params as its dataclass; ``threads`` from --threads unless the section sets it."""
    from ltaug.common.config import from_dict, section_values

    module, cls_name = s.section.cls.split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    values = section_values(args.params, s.section.key)
    if s.threads and "threads" in {f.name for f in dataclasses.fields(cls)}:
        values.setdefault("threads", args.threads)
    if s.section_values:
        values |= s.section_values(args)
    return from_dict(cls, values, s.section.key)


def build_runtime(args: argparse.Namespace) -> Runtime:
    """(device, dtype, variant) from the diffusion section in --diffusion: the device picked once, CUDA
    when present unless the config names one; dtype and variant as configured."""
    from ltaug.backbone.diffusion import DiffusionConfig, pick_device
    from ltaug.common.config import from_json

    section = from_json(DiffusionConfig, args.diffusion, "diffusion")
    return Runtime(pick_device(section.device), section.dtype, section.variant)


def prepare(s: Stage, args: argparse.Namespace) -> Job:
    """The window, the section, the runtime and torch's threads, set once before the stage runs."""
    if s.reads_images:
        from ltaug.common.images import set_window

        set_window(json.loads(args.window))
    cfg = build_section(s, args) if s.section else None
    if s.torch:
        import torch

        torch.set_num_threads(getattr(cfg, "threads", None) or args.threads)
    return Job(args, cfg, build_runtime(args) if s.runtime else None)


# ---------------------------------------------------------------------------- options several stages share


def images_option() -> Option:
    """--images: the image stores every stage after decode_images reads the data set's pixels from."""
    return Param("images", "results/images: the stores of rule decode_images")


def shard_options(verb: str, done: str, key: str) -> tuple[Option, Option]:
    """--shard, --shards of a stage that can split a split's rows over jobs (the rule's wildcard and config key)."""
    return (Wildcard("shard", f"{verb} only shard SHARD (1-based) of the split's rows", type=int, default=1),
            Param("shards", f"number of shards the split is {done} in ({key})", type=int, default=1))  # fmt: skip


def gather_options() -> tuple[Option, ...]:
    """What every gather stage takes: the split, its shard stores in order, the joined store."""
    return (Wildcard("split", "train, val or test", choices=SPLITS),
            Input("shards", "the shard stores 1..S, in order", many=True),
            Output("store", "output .zarr store"))  # fmt: skip


def training_store_options() -> tuple[Option, ...]:
    """The training split's latent and CAM stores and the IL model that made the maps."""
    return (Input("latents", "training latent store (.zarr)"), Input("cams", "CAM store of the training split (.zarr)"),
            Input("model", "IL model (results/il/model.pt)"))  # fmt: skip


def synthetic_set_options(outdir: str = "synthetic") -> tuple[Option, ...]:
    """What every stage that writes a synthetic set takes."""
    return (Input("classes", "classes.json"),
            Param("n_per_class", "samples per tail class (fusion.n_per_class)", type=int),
            Option("outdir", "output synthetic set directory (results/synthetic/{method})", f"output.{outdir}"))  # fmt: skip
