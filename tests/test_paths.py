"""`stylecast.paths.atomic_output`: nothing half-written at the path, and no folders left by a failure."""
from __future__ import annotations

import pytest

from stylecast.paths import atomic_output


def test_a_failed_write_removes_the_temporary_and_the_folders_made_for_it(tmp_path):
    target = tmp_path / "a" / "b" / "out.mp4"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_folders_that_existed_or_got_other_files_stay(tmp_path):
    (tmp_path / "a").mkdir()
    target = tmp_path / "a" / "b" / "c" / "out.mp4"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            (tmp_path / "a" / "b" / "other.txt").write_text("someone else's")
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "a/b/other.txt"]


def test_a_complete_write_lands_at_the_path(tmp_path):
    target = tmp_path / "new" / "out.mp4"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in target.parent.iterdir()] == ["out.mp4"]
