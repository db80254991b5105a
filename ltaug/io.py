"""Atomic outputs: a stage writes into a temporary sibling and renames it into place when complete.

A run that fails or is killed leaves at most a hidden ``.name.tmp-PID`` path behind,
never a file or directory that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, on error delete it.

    Works for files and directories (a Zarr store, an image folder). An existing
    ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir() and tmp.is_dir():
        _remove(path)
    os.replace(tmp, path)
