"""Do two runs of the workflow hold the same results? Contents are compared, not bytes or times.

``differences(a, b)`` walks two results/ trees and lists every file or store that exists in
one only or whose content differs; ``[]`` means the same results. Zarr stores compare
their arrays value for value and their attributes; CSV, JSON, PNG, .pt and .safetensors
files compare what they hold. Values that measure time (JSON keys and CSV columns such as
``seconds``, ``wall_s``, ``samples_per_s``) differ from run to run and are left out.
Snakemake's ``.snakemake_timestamp`` markers are ignored. Any other file compares byte
for byte; a new kind of output gets its comparison in COMPARE.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

TIMING = re.compile(r"(^|_)(seconds|wall|elapsed|duration|timestamp|time)(_|$)|_per_s$|_s$")
IGNORED = {".snakemake_timestamp"}


def _timing(key) -> bool:
    return isinstance(key, str) and bool(TIMING.search(key))


def _same(a, b, where: str) -> list[str]:
    """Differences between two nested values (dicts, lists, arrays, tensors, numbers), timing keys left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys_a, keys_b = {k for k in a if not _timing(k)}, {k for k in b if not _timing(k)}
        if keys_a != keys_b:
            return [f"{where}: keys {sorted(map(str, keys_a ^ keys_b))} in one only"]
        return [d for k in sorted(keys_a, key=str) for d in _same(a[k], b[k], f"{where}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{where}[{i}]")]
    if hasattr(a, "detach") and hasattr(b, "detach"):  # torch tensors
        a, b = a.detach().cpu().numpy(), b.detach().cpu().numpy()
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"]
        equal = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        if not equal:
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).max() if a.dtype.kind in "fciu" else "?"
            return [f"{where}: values differ (max abs difference {diff})"]
        return []
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b and type(a) is type(b) else [f"{where}: {a!r} != {b!r}"]


def _zarr(a: Path, b: Path, where: str) -> list[str]:
    import zarr

    def contents(path: Path) -> dict:
        group = zarr.open_group(path, mode="r")
        out = {"attrs": dict(group.attrs)}
        for name, array in group.arrays():
            out[f"array {name}"] = {"values": array[:], "attrs": dict(array.attrs)}
        for name, _ in group.groups():
            out[f"group {name}"] = contents(path / name)
        return out

    with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp inside a directory output
        warnings.filterwarnings("ignore", "Object at .snakemake_timestamp is not recognized")
        return _same(contents(a), contents(b), where)


def _csv(a: Path, b: Path, where: str) -> list[str]:
    import pandas as pd

    fa, fb = pd.read_csv(a), pd.read_csv(b)
    fa, fb = fa.drop(columns=[c for c in fa if _timing(c)]), fb.drop(columns=[c for c in fb if _timing(c)])
    if list(fa.columns) != list(fb.columns) or fa.shape != fb.shape:
        return [f"{where}: columns or shape differ: {list(fa.columns)} {fa.shape} != {list(fb.columns)} {fb.shape}"]
    try:
        pd.testing.assert_frame_equal(fa, fb, check_exact=True)
    except AssertionError as exc:
        return [f"{where}: {str(exc).splitlines()[0]} ({' '.join(str(exc).split())[:300]})"]
    return []


def _json(a: Path, b: Path, where: str) -> list[str]:
    return _same(json.loads(a.read_text()), json.loads(b.read_text()), where)


def _png(a: Path, b: Path, where: str) -> list[str]:
    from PIL import Image

    return _same(np.asarray(Image.open(a)), np.asarray(Image.open(b)), where)


def _torch(a: Path, b: Path, where: str) -> list[str]:
    import torch

    return _same(torch.load(a, map_location="cpu", weights_only=False), torch.load(b, map_location="cpu", weights_only=False), where)  # fmt: skip


def _safetensors(a: Path, b: Path, where: str) -> list[str]:
    from safetensors.numpy import load_file

    return _same(load_file(a), load_file(b), where)


def _bytes(a: Path, b: Path, where: str) -> list[str]:
    return [] if a.read_bytes() == b.read_bytes() else [f"{where}: bytes differ"]


COMPARE = {".csv": _csv, ".json": _json, ".png": _png, ".pt": _torch, ".safetensors": _safetensors}


def _entries(root: Path) -> dict[str, Path]:
    """Relative path -> path of every file, and of every Zarr store as one entry."""
    out = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        for path in folder.iterdir():
            if path.name in IGNORED:
                continue
            if path.is_dir() and path.suffix == ".zarr":
                out[str(path.relative_to(root))] = path
            elif path.is_dir():
                stack.append(path)
            else:
                out[str(path.relative_to(root))] = path
    return out


def differences(a: str | Path, b: str | Path) -> list[str]:
    """Every difference between the results trees ``a`` and ``b``; [] when they hold the same."""
    ea, eb = _entries(Path(a)), _entries(Path(b))
    out = [f"{name}: only in {a}" for name in sorted(ea.keys() - eb.keys())]
    out += [f"{name}: only in {b}" for name in sorted(eb.keys() - ea.keys())]
    for name in sorted(ea.keys() & eb.keys()):
        pa, pb = ea[name], eb[name]
        compare = _zarr if pa.suffix == ".zarr" else COMPARE.get(pa.suffix, _bytes)
        out += compare(pa, pb, name)
    return out
