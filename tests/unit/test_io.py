"""atomic_path: complete outputs appear at once; failures leave nothing behind."""

from __future__ import annotations

import pytest

from ltaug.common.io import atomic_path


def test_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("a,b\n")
        assert not target.exists() and tmp.parent == target.parent
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.csv"]


def test_directory_replaces_an_old_one_whole(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
        assert (target / "old").exists()  # the old one stays until the new one is complete
    assert sorted(p.name for p in target.iterdir()) == ["new"]


@pytest.mark.parametrize("as_dir", [False, True])
def test_failure_leaves_nothing_and_keeps_the_old_output(tmp_path, as_dir):
    target = tmp_path / "out"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            if as_dir:
                tmp.mkdir()
                (tmp / "part").write_text("half")
            else:
                tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_killed_runs_temporary_is_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp-{dead.stdout.strip()}"  # a pid that no longer runs
    stale.mkdir()
    (stale / "half").write_text("half")
    with atomic_path(tmp_path / "out") as tmp:
        tmp.write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
