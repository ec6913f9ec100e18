"""Stop a local PostgreSQL cluster in its tracks (SIGSTOP the postmaster and every backend) and resume it.

A stopped cluster is the worst kind of slow database: connections stay open, TCP handshakes still
complete (the kernel accepts into the listen backlog), but nothing answers and nothing errors.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def postmaster_pid(admin_url: str) -> int | None:
    """The postmaster of the server behind `admin_url`, if it runs on this machine (else None)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:  # read while the backend lives
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        try:
            return _ppid(int(row[0]))
        except (OSError, ValueError):
            return None


def cluster_pids(postmaster: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _ppid(int(entry.name)) == postmaster:
                    children.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return [postmaster, *children]


@contextmanager
def stopped_cluster(postmaster: int) -> Iterator[list[int]]:
    """SIGSTOP the postmaster and its children for the duration of the block; SIGCONT always follows."""
    pids = cluster_pids(postmaster)
    stopped = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        yield stopped
    finally:
        for pid in reversed(stopped):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
