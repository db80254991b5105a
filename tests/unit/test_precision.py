"""ltaug.common.precision: auto is bfloat16 only where the machine computes it natively; an explicit value wins."""

from __future__ import annotations

import pytest
import torch

from ltaug.common.errors import ConfigError
from ltaug.common.precision import cpu_flags, native_bfloat16, resolve_precision, training_autocast

CPU = torch.device("cpu")
ICE_LAKE = frozenset({"sse4_2", "avx2", "avx512f", "avx512bw", "avx512_vnni"})  # AVX-512, no bfloat16 dot products
ZEN4 = ICE_LAKE | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}


def test_cpu_flags_are_read_from_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\nbugs\t\t: spectre\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # no /proc/cpuinfo (macOS, Windows): no native bfloat16


@pytest.mark.parametrize(
    "flags, max_isa, native",
    [
        (ICE_LAKE, "", False),  # AVX-512 without BF16: emulated
        (ZEN4, "", True),
        (SAPPHIRE_RAPIDS, "", True),
        (SAPPHIRE_RAPIDS, "AVX512_CORE", False),  # oneDNN's bfloat16 kernels turned off
        (SAPPHIRE_RAPIDS, "avx2", False),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_BF16", True),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_AMX", True),
        (ZEN4, "ALL", True),
        (frozenset(), "", False),
    ],
)
def test_a_cpu_is_native_with_amx_or_avx512_bf16_that_onednn_may_use(flags, max_isa, native):
    assert native_bfloat16(CPU, flags=flags, max_isa=max_isa) is native


def test_the_environment_s_onednn_cap_is_read(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert native_bfloat16(CPU, flags=SAPPHIRE_RAPIDS) is False
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert native_bfloat16(CPU, flags=SAPPHIRE_RAPIDS) is True


@pytest.mark.parametrize("supported", [True, False])
def test_cuda_asks_the_device_without_emulation(monkeypatch, supported):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return supported

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert native_bfloat16(torch.device("cuda")) is supported and asked == [False]


@pytest.mark.parametrize(
    "value, flags, resolved",
    [("auto", ICE_LAKE, "float32"), ("auto", ZEN4, "bfloat16"), ("float32", ZEN4, "float32"),
     ("bfloat16", ICE_LAKE, "bfloat16")],  # fmt: skip
)
def test_auto_follows_the_machine_and_an_explicit_value_wins(value, flags, resolved):
    assert resolve_precision(value, CPU, "il.precision", flags=flags, max_isa="") == resolved


def test_an_unknown_precision_names_its_key():
    with pytest.raises(ConfigError, match=r"eval.classifier.precision: 'float16' is not one of auto, float32, bfloat16"):
        resolve_precision("float16", CPU, "eval.classifier.precision")


def test_the_autocast_is_bfloat16_only_when_resolved_so():
    with training_autocast("bfloat16", CPU):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with training_autocast("float32", CPU):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="not resolved"):
        training_autocast("auto", CPU)
