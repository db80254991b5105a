"""The stages' command line: a registry that every stage module fills, its arguments beside what it runs.

``@stage(name, help, arguments)`` registers a run function under ``python -m ltaug NAME``;
``arguments(p)`` adds the stage's own options to its parser. Every stage also takes
``--params`` (its config section as JSON), ``--threads`` and, if it reads the data set's
image files, ``--window`` (:mod:`ltaug.__main__` adds them). The stages are in
:mod:`ltaug.cli_method` (the method, data to synthetic images) and :mod:`ltaug.cli_eval`
(baselines, evaluation, the report).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import NamedTuple

SPLITS = ("train", "val", "test")


class Stage(NamedTuple):
    run: Callable[[argparse.Namespace], None]
    arguments: Callable[[argparse.ArgumentParser], None]
    help: str
    reads_images: bool  # reads the data set's image files: maps > 8-bit pixels by data.window (--window)


STAGES: dict[str, Stage] = {}


def stage(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None], reads_images: bool = False):
    """Register the decorated function as the run function of stage ``name``."""

    def register(run: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
        if name in STAGES:
            raise ValueError(f"stage {name} is registered twice")
        STAGES[name] = Stage(run, arguments, help, reads_images)
        return run

    return register


class Runtime(NamedTuple):
    device: object  # the torch.device (torch is imported by the stages, not at start-up)
    dtype: str  # diffusion.dtype, a name
    variant: str  # diffusion.variant: which weight files of the model directory to read


def runtime(args: argparse.Namespace) -> Runtime:
    """(device, dtype, variant) from the diffusion section in --diffusion: the device picked once, CUDA
    when present unless the config names one; dtype and variant as configured."""
    from ltaug.common.config import from_json
    from ltaug.backbone.diffusion import DiffusionConfig, pick_device

    section = from_json(DiffusionConfig, args.diffusion, "diffusion")
    return Runtime(pick_device(section.device), section.dtype, section.variant)


def section_with_threads(cls, args: argparse.Namespace, key: str):
    """The stage's config section from --params as ``cls``, its threads from --threads unless the section sets them."""
    from ltaug.common.config import from_dict

    params = json.loads(args.params)
    params.setdefault("threads", args.threads)
    return from_dict(cls, params, key)


def diffusion_argument(p: argparse.ArgumentParser, reads: str = "device") -> None:
    """--diffusion: the diffusion section the stage reads its runtime (``reads``) from."""
    p.add_argument("--diffusion", default="{}", help=f"the diffusion section ({reads}) as JSON")


def torch_section(cls, args: argparse.Namespace, key: str):
    """:func:`section_with_threads`, with torch's CPU threads set to the section's."""
    import torch

    cfg = section_with_threads(cls, args, key)
    torch.set_num_threads(cfg.threads)
    return cfg


def images_argument(p: argparse.ArgumentParser) -> None:
    """--images: the image stores every stage after decode_images reads the data set's pixels from."""
    p.add_argument("--images", required=True, help="results/images: the stores of rule decode_images")


def model_arguments(p: argparse.ArgumentParser) -> None:
    """The diffusion model a stage loads, and the runtime it loads it with."""
    p.add_argument("--model", required=True, help="diffusers Stable Diffusion directory")
    diffusion_argument(p, "device, dtype")


def training_stores_arguments(p: argparse.ArgumentParser) -> None:
    """The training split's latent and CAM stores and the IL model that made the maps."""
    p.add_argument("--latents", required=True, help="training latent store (.zarr)")
    p.add_argument("--cams", required=True, help="CAM store of the training split (.zarr)")
    p.add_argument("--model", required=True, help="IL model (results/il/model.pt)")


def synthetic_set_arguments(p: argparse.ArgumentParser) -> None:
    """What every stage that writes a synthetic set takes."""
    p.add_argument("--classes", required=True, help="classes.json")
    p.add_argument("--n-per-class", type=int, required=True, help="samples per tail class (fusion.n_per_class)")
    p.add_argument("--outdir", required=True, help="output synthetic set directory (results/synthetic/{method})")
