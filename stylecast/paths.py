"""Output paths: what may be replaced by a file renamed into place (no media libraries: the SDK uses it too)."""
from __future__ import annotations

import stat
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
