"""Memory of a process tree, read from /proc (Linux): what the suite and the API benchmark sample."""
from __future__ import annotations

import re
from pathlib import Path


def tree_rss(root: int) -> dict[int, int]:
    """pid -> VmRSS bytes for ``root`` and all its descendants that are alive now."""
    table: dict[int, tuple[int, int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            text = (p / "status").read_text()
        except OSError:
            continue  # it ended while we looked
        ppid = re.search(r"^PPid:\s+(\d+)", text, re.M)
        rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
        if ppid:
            table[int(p.name)] = (int(ppid.group(1)), int(rss.group(1)) * 1024 if rss else 0)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
    return out
