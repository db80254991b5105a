"""Test hook (tests/workflow/test_resume.py): hold one workflow job still so that it can be killed mid-write.

On PYTHONPATH, with LTAUG_PAUSE_STAGE=<stage> and LTAUG_PAUSE_MARKER=<file>, the process
``python -m ltaug <stage> ...`` stops at its LTAUG_PAUSE_AT-th (default first) complete
output, just before ``ltaug.common.io.atomic_path`` renames it into place: it writes
"<pid> <output>" to the marker file and sleeps until it is killed. Every other process,
and every process without these variables, is untouched.
"""

import os
import sys

_stage = os.environ.get("LTAUG_PAUSE_STAGE")
_argv = getattr(sys, "orig_argv", [])
if _stage and "-m" in _argv and _argv[_argv.index("-m") + 1 : _argv.index("-m") + 3] == ["ltaug", _stage]:
    import contextlib
    import time
    from pathlib import Path

    import ltaug.common.io

    _real, _count = ltaug.common.io.atomic_path, [0]
    _at = int(os.environ.get("LTAUG_PAUSE_AT", "1"))

    @contextlib.contextmanager
    def _paused(path):
        with _real(path) as tmp:
            yield tmp
            _count[0] += 1
            if _count[0] == _at:
                Path(os.environ["LTAUG_PAUSE_MARKER"]).write_text(f"{os.getpid()} {path}\n")
                time.sleep(3600)

    ltaug.common.io.atomic_path = _paused
