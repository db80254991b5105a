"""bfloat16 autocast where the machine computes it natively, float32 elsewhere: the ``auto`` of every precision key.

The training passes with a precision key (``diffusion.bootstrap.vae_precision``, ``il.precision``,
``eval.classifier.precision``) autocast their forward passes to bfloat16 when the key says
``bfloat16``; weights, losses and predictions stay float32. ``auto`` says bfloat16 only where it is
native: a CUDA device with bfloat16 arithmetic (Ampere and later), or a CPU with AMX or AVX512-BF16
whose bfloat16 kernels oneDNN may use (``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16`` turns them
off). Elsewhere the autocast is emulated and slower than float32 (``benchmarks/precision.py``,
docs/cost.md), so ``auto`` picks float32 there. An explicit value wins.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from ltaug.common.errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16")
CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bfloat16 dot products
# oneDNN ISA caps that keep its bfloat16 kernels: AVX512_CORE_BF16 and every ISA after it (FP16, AMX, AVX10)
BF16_ISAS = ("BF16", "FP16", "AMX", "AVX10", "ALL", "DEFAULT")


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from ``cpuinfo`` (Linux); none where the file cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bfloat16(device: torch.device, flags: frozenset[str] | None = None, max_isa: str | None = None) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA's own answer (no emulation); on the CPU, AMX or
    AVX512-BF16 among ``flags`` (default: this CPU's) with oneDNN's ISA cap ``max_isa`` (default: the
    environment's ``ONEDNN_MAX_CPU_ISA``) leaving its bfloat16 kernels on."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    flags = cpu_flags() if flags is None else flags
    max_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if max_isa is None else max_isa
    if max_isa and not any(name in max_isa.upper() for name in BF16_ISAS):
        return False
    return any(flag in flags for flag in CPU_FLAGS)


def resolve_precision(value: str, device: torch.device, key: str, **probe) -> str:
    """``value`` of the precision key ``key``: float32 or bfloat16 as given, auto as :func:`native_bfloat16` says
    (``probe``: its ``flags`` and ``max_isa``)."""
    if value not in PRECISIONS:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(PRECISIONS)}.")
    if value != "auto":
        return value
    return "bfloat16" if native_bfloat16(device, **probe) else "float32"


def training_autocast(precision: str, device: torch.device) -> torch.autocast:
    """bfloat16 autocast of a training pass when the resolved ``precision`` is bfloat16, else a no-op context."""
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision {precision!r} is not resolved; call resolve_precision first")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
