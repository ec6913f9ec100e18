"""Finding the worker processes of a `serve --workers` supervisor (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def worker_pids(supervisor_pid: int) -> dict[int, int]:
    """worker index -> pid, for the live children of `supervisor_pid`."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != supervisor_pid or stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for item in environ:
            if item.startswith(b"MCP_GATEWAY_WORKER_INDEX="):
                found[int(item.split(b"=", 1)[1])] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
