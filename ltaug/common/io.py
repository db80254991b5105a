"""Atomic outputs: a stage writes into a temporary sibling and renames it into place when complete.

A run that fails leaves nothing behind; one killed with SIGKILL leaves at most a hidden
``.name.tmp-PID`` path, never a file or directory that looks complete, and the next
write of the same output removes it.
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


def _alive(pid: str) -> bool:
    """Whether the process that owns a temporary path still runs (then it is not stale)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, on error delete it.

    Works for files and directories (a Zarr store, an image folder). An existing
    ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed run
        if not _alive(stale.name.rsplit("-", 1)[1]):
            _remove(stale)
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
