"""A real gateway process for tests: `python -m gateway.cli serve` on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers import JWT_SECRET, free_port, make_jwt
from tests.pg import TestDatabase

__all__ = ["JWT_SECRET", "REPO", "GatewayProcess", "create_pat", "free_port", "make_jwt", "ready",
           "running_gateway", "running_together", "start_gateway", "stop_all"]

REPO = Path(__file__).resolve().parent.parent


def create_pat(database: TestDatabase, tenant: str, user: str, role: str = "member") -> str:
    """A personal access token, made the way an operator makes one (the CLI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update(database.env(), PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--tenant", tenant,
                             "--user", user, "--role", role], env=env, capture_output=True, text=True,
                            timeout=60, cwd=str(REPO))
    if result.returncode != 0:
        raise RuntimeError(f"token create failed: {result.stderr}")
    return result.stdout.strip()


@dataclass
class GatewayProcess:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return self.base_url + "/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not become healthy in {timeout}s:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.signal(sig)
        return self.wait_stopped(timeout)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Once only: a second SIGTERM is "exit now" to uvicorn."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_stopped(self, timeout: float = 30.0) -> int:
        """The exit code; killed if it has not exited within `timeout`."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.proc.returncode


def gateway_env(database: TestDatabase, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update(database.env())
    env.update({
        "MCP_GATEWAY_PORT": str(port),
        "MCP_GATEWAY_HOST": "127.0.0.1",
        "MCP_GATEWAY_DATA_DIR": str(data_dir),
        "MCP_GATEWAY_JWT_SECRET": JWT_SECRET,
        "MCP_GATEWAY_INSTANCE_ID": f"test-{port}",
        "MCP_GATEWAY_FLUSH_INTERVAL": "0.2",
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update(extra)
    return env


def start_gateway(database: TestDatabase, data_dir: Path, *, args: Sequence[str] = ("serve",),
                  port: int | None = None, wait: bool = True, **extra_env: str) -> GatewayProcess:
    port = port or free_port()
    env = gateway_env(database, data_dir, port, **extra_env)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"gateway-{port}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, cwd=str(REPO))
    gateway = GatewayProcess(port=port, proc=proc, log_path=log_path, env=env, args=list(args))
    if wait:
        gateway.wait_ready()
    return gateway


@contextmanager
def running_gateway(database: TestDatabase, data_dir: Path, **kwargs: object) -> Iterator[GatewayProcess]:
    with running_together(start_gateway(database, data_dir, wait=False, **kwargs)) as (gateway,):  # type: ignore[arg-type]
        yield gateway


def ready(*gateways: GatewayProcess) -> tuple[GatewayProcess, ...]:
    """Wait for gateways started with `wait=False`: started together, their start-ups (mostly imports) overlap
    on the machine's cores instead of queueing. If one never becomes healthy, all are stopped."""
    try:
        for gateway in gateways:
            gateway.wait_ready()
    except BaseException:
        stop_all(*gateways)
        raise
    return gateways


def stop_all(*gateways: GatewayProcess, timeout: float = 30.0) -> None:
    """SIGTERM to every one first, then wait for each: their drains overlap."""
    for gateway in gateways:
        gateway.signal()
    deadline = time.monotonic() + timeout
    for gateway in gateways:
        gateway.wait_stopped(max(0.1, deadline - time.monotonic()))


@contextmanager
def running_together(*gateways: GatewayProcess) -> Iterator[tuple[GatewayProcess, ...]]:
    """`running_gateway` for several, each started with `wait=False`: ready together, stopped together."""
    ready(*gateways)
    try:
        yield gateways
    finally:
        stop_all(*gateways)
