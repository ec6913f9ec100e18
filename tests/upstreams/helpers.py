"""Upstream MCP servers as real subprocesses, and config files, for the upstream/access/quota tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import poll as poll  # re-exported: tests import it from here

SERVER = Path(__file__).with_name("upstream_server.py")


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"upstream exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start_upstream(kind: str, port: int, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """`kind` = http | json | garbage, on 127.0.0.1:port, `env` added to its environment; returns once the port
    accepts connections."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, str(SERVER), kind, str(port)], stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ | env)
    try:
        wait_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@contextmanager
def upstream(kind: str, port: int, log_path: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_upstream(kind, port, log_path, **env)
    try:
        yield proc
    finally:
        stop(proc)


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


