"""`mcp-gateway dev` as a person uses it: start it, take the printed token, call `echo`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastmcp import Client

from tests.gateway.conftest import wait_for
from tests.gateway_proc import REPO, free_port
from tests.pg import Server, TestDatabase


@contextmanager
def dev_process(env: dict[str, str], port: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "dev", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
    try:
        def printed_token() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"dev exited {proc.returncode}:\n{log.read_text()}")
            found = re.search(r"Token:\s+(\S+)", log.read_text())
            return found.group(1) if found else None

        token = wait_for(printed_token, 60, "the dev token")
        wait_for(lambda: _healthy(port), 30, "dev to serve")
        yield proc, token
    finally:
        proc.terminate()
        proc.wait(30)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_dev_prints_a_working_token_and_reuses_it(pg_server: Server, database: TestDatabase) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mcpgw-dev-"))  # short: the embedded socket lives here
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env.update({"MCP_GATEWAY_DATA_DIR": str(data_dir), "COLUMNS": "200", "PYTHONPATH": str(REPO)})
    if pg_server.embedded_dir is None:  # no local PostgreSQL binaries: use the test server instead
        env.update(database.env())
    port = free_port()
    try:
        with dev_process(env, port, data_dir / "dev1.log") as (_, token):
            output = (data_dir / "dev1.log").read_text()
            assert f"http://127.0.0.1:{port}/mcp" in output
            assert "claude mcp add --transport http" in output and '"mcpServers"' in output and "curl " in output
            assert "OAuth clients" in output and "with the URL alone" in output
            async with Client(f"http://127.0.0.1:{port}/mcp", auth=token) as client:
                assert (await client.call_tool("echo", {"text": "hello dev"})).data == "hello dev"
                usage = await client.call_tool("whoami", {})
                assert usage.structured_content["user_id"] == "dev"
        with dev_process(env, port, data_dir / "dev2.log") as (_, second_token):
            assert second_token == token, "a second dev reuses the dev user and its token"
            async with Client(f"http://127.0.0.1:{port}/mcp", auth=token) as client:
                usage = (await client.call_tool("my_usage", {})).structured_content
                assert usage["calls"] >= 2  # echo and whoami from the first run
    finally:
        subprocess.run([sys.executable, "-m", "gateway.cli", "db", "stop"], env=env, cwd=str(REPO),
                       capture_output=True, timeout=60)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
