"""Output paths: checked before any work, written beside the target and renamed into place when complete.

No media libraries here: the SDK's downloads use the same rules as the engine's outputs.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from stylecast.errors import MediaError


def check_replaceable(out: str | Path) -> None:
    """Outputs are renamed into place, which would put a regular file where a device or a pipe stood
    (``-o /dev/null`` run as root would replace the device): those are refused with `MediaError`."""
    try:
        mode = Path(out).stat().st_mode
    except OSError:  # not there (or not reachable): nothing would be replaced
        return
    if not stat.S_ISREG(mode):
        raise MediaError(f"{out}: not a regular file (a device, pipe or socket); give a file path")


def check_output_path(path: str | Path, others: Sequence[str | Path] = (), suffix: str | None = None) -> Path:
    """Refuse, before any work, an output path that cannot be written or would overwrite ``others`` (the
    inputs, and the command's other outputs); ``suffix``: the file type it must have (e.g. ``".mp4"``).

    The folder is created if missing, and a temporary file is made and removed in it: that is the one test
    that holds for every reason a write can fail (read-only mounts, /proc, a file where a folder should be).
    """
    if isinstance(path, str) and path.endswith(("/", os.sep)):  # Path() would drop the slash
        raise MediaError(f"{path}: names a folder; give the output file's name")
    out = Path(path)
    if suffix and out.suffix.lower() != suffix:
        raise MediaError(f"{out}: the output must be a {suffix} file")
    for other in others:
        if Path(other).resolve() == out.resolve():
            raise MediaError(f"{out}: the output would overwrite {other}")
    if out.is_dir():
        raise MediaError(f"{out}: is a directory")
    check_replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".check"):
            pass
    except OSError as exc:
        where = exc.filename or out.parent
        raise MediaError(f"cannot write {out}: {where}: {exc.strerror or type(exc).__name__}") from None
    return out


# Folders that outputs of this process are being written into, and how many: a failed output removes the
# folders it made only when no other output of this process (another download thread) is using them.
_FOLDERS_IN_USE: Counter = Counter()
_FOLDERS_LOCK = threading.Lock()


def _make_folders(folder: Path, made: list[Path]) -> None:
    """Create ``folder`` and its missing parents, appending to ``made`` (deepest first) the ones this call
    made: a folder another process or thread made in the meantime is not counted."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise
        else:
            made.insert(0, folder)


def _release_folders(using: list[Path], made: list[Path], remove: bool) -> None:
    """Stop counting ``using``; with ``remove``, remove the folders in ``made`` that no other output uses."""
    with _FOLDERS_LOCK:  # removal under the lock: no other output can start using a folder as it goes
        _FOLDERS_IN_USE.subtract(using)
        for folder in using:
            if _FOLDERS_IN_USE[folder] <= 0:
                del _FOLDERS_IN_USE[folder]
        if remove:
            for folder in made:  # deepest first; a folder in use keeps every folder above it in use too
                if folder in _FOLDERS_IN_USE:
                    break
                with contextlib.suppress(OSError):  # not empty (someone else's file): it stays
                    folder.rmdir()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    Nothing half-written is ever left at ``path``: on any error (or cancellation) the temporary is removed, and
    so are the folders that were made for it, unless another output of this process is being written there.
    """
    path = Path(path)
    folder = Path(os.path.abspath(path.parent))
    using = [folder, *folder.parents]  # counted by absolute path: a relative and an absolute name meet
    made: list[Path] = []
    with _FOLDERS_LOCK:  # counted before any folder is made, so that a failing output never removes one in use
        _FOLDERS_IN_USE.update(using)
    done = False
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        _make_folders(folder, made)
        yield tmp
        check_replaceable(path)
        os.replace(tmp, path)
        done = True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _release_folders(using, made, remove=not done)
