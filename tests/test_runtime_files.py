"""Outputs are written through temporary files created exclusively beside them and renamed into
place: a link planted at the output or at a temporary name is never written through, a failed
write leaves the old output and no temporary file, and staged folders get ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from quake.runtime import staging_dir, write_atomic, write_text_atomic


def test_a_planted_link_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out.csv"
    # links at the output itself and at the temporary names older versions used
    for name in ("out.csv", f".out.csv.tmp-{os.getpid()}", "out.csv.tmp", ".out.csv.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_text_atomic(out, "new")
    assert victim.read_text() == "precious"
    assert out.read_text() == "new" and not out.is_symlink()


def test_a_failed_write_keeps_the_old_output_and_no_temporary_file(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old")

    def fail(tmp) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_atomic(out, fail)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_write_error_names_the_output(tmp_path):
    out = tmp_path / "missing-folder" / "out.csv"
    with pytest.raises(OSError, match=f"cannot write {str(out)!r}"):
        write_text_atomic(out, "x")


def test_staging_folders_are_new_and_get_the_permissions_of_mkdir(tmp_path):
    target = tmp_path / "model"
    first, second = staging_dir(target), staging_dir(target)
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(".model.") and first.name.endswith(".tmp")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o777 & ~mask
