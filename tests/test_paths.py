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


def test_a_failed_write_keeps_a_new_folder_another_write_is_about_to_use(tmp_path, monkeypatch):
    """Two downloads into the same new folder (threads of one process): the one that made the folder fails
    before the other has written anything into it.  The folder must stay for the other (one names it
    relative to the working directory, the other absolute)."""
    monkeypatch.chdir(tmp_path)
    first = atomic_output("new/a.mp4")
    first_tmp = first.__enter__()  # makes tmp_path/new
    second = atomic_output(tmp_path / "new" / "b.mp4")
    second_tmp = second.__enter__()
    first_tmp.write_bytes(b"half")
    assert first.__exit__(RuntimeError, RuntimeError("interrupted"), None) is False
    second_tmp.write_bytes(b"whole")
    second.__exit__(None, None, None)
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["b.mp4"]
    # Once no write uses it, a failure removes the folder it made, as before.
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "other" / "deeper" / "c.mp4") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_a_file_where_a_folder_should_be_is_an_error_and_nothing_is_made(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        with atomic_output(tmp_path / "file" / "sub" / "out.mp4"):
            pass
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
