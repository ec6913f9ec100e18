"""A gateway configuration with two upstreams whose health tests can tell apart: `local`, a stdio server
that answers (its tools include `local_forecast`), and `gone`, a URL nobody listens on."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers.net import free_port
from tests.upstreams.helpers import SERVER

UP_AND_DOWN = {"local": "up", "gone": "down"}  # what their health settles to, within seconds


def write_up_and_down_config(path: Path) -> Path:
    """Write the configuration file (gateway.toml) to `path` and return it."""
    path.write_text(f"""
[[upstreams]]
name = "local"
command = "{sys.executable}"
args = ["{SERVER}", "stdio"]
timeout = 10
health_interval = 1

[[upstreams]]
name = "gone"
url = "http://127.0.0.1:{free_port()}/mcp"
timeout = 2
retry_seconds = 0.5
health_interval = 1
""")
    return path
