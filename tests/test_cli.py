"""Bad input anywhere: one line naming the problem, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from fastmcp import Client

from tests.gateway_proc import REPO, GatewayProcess, free_port, gateway_env, make_jwt
from tests.pg import TestDatabase


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=base | (env or {}),
                          capture_output=True, text=True, timeout=60, cwd=str(REPO))


@pytest.mark.parametrize(("args", "env", "needle"), [
    (("frobnicate",), {}, "No such command"),
    (("token", "create", "--tenant", "acme"), {}, "--user"),
    (("token", "create", "--tenant", "acme", "--user", "a", "--role", "king"), {}, "--role"),
    (("token", "create", "--tenant", "acme", "--user", "a", "--expires-in", "3x"), {}, "--expires-in"),
    (("token", "revoke", "not-a-uuid"), {}, "not a token id"),
    (("migrate",), {"MCP_GATEWAY_DATABASE_URL": "mysql://x"}, "postgresql://"),
    (("migrate",), {"MCP_GATEWAY_PORT": "abc"}, "MCP_GATEWAY_PORT"),
    (("serve", "--tools", "nosuch_module:mcp"), {}, "nosuch_module"),
    (("serve", "--tools", "no-colon"), {}, "module:attribute"),
    (("serve", "--config", "/nonexistent/gateway.toml"), {}, "config file not found"),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], env: dict[str, str], needle: str,
                                          database: TestDatabase) -> None:
    # Point at the test database so nothing would touch an embedded cluster.
    result = run_cli(*args, env=database.env() | env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcp-gateway: error:"), result.stderr
    assert needle in lines[0] and "Traceback" not in result.stderr


def test_token_create_prints_only_the_token_and_writes_nothing_on_error(
        database: TestDatabase, admin_conn: psycopg.Connection) -> None:
    bad = run_cli("token", "create", "--tenant", "acme", "--user", "zed", "--role", "nope", env=database.env())
    assert bad.returncode == 2
    assert admin_conn.execute("SELECT count(*) FROM gateway.api_tokens").fetchone() == (0,)
    good = run_cli("token", "create", "--tenant", "acme", "--user", "zed", env=database.env())
    assert good.returncode == 0, good.stderr
    assert good.stdout.count("\n") == 1 and good.stdout.startswith("mcpgw_")
    listed = run_cli("token", "list", "--tenant", "acme", env=database.env())
    assert good.stdout.strip() not in listed.stdout and "zed" in listed.stdout
    token_id = admin_conn.execute("SELECT token_id::text FROM gateway.api_tokens").fetchone()[0]
    assert run_cli("token", "revoke", token_id, env=database.env()).returncode == 0
    again = run_cli("token", "revoke", token_id, env=database.env())
    assert again.returncode == 2 and "no active token" in again.stderr


def test_migrate_twice_is_a_no_op(database: TestDatabase) -> None:
    first = run_cli("migrate", env=database.env())
    second = run_cli("migrate", env=database.env())
    assert first.returncode == 0 and second.returncode == 0
    assert "up to date" in second.stdout


def test_token_list_json_timestamps_are_iso_8601(database: TestDatabase) -> None:
    made = run_cli("token", "create", "--tenant", "acme", "--user", "iso", "--expires-in", "1d", env=database.env())
    assert made.returncode == 0, made.stderr
    listed = run_cli("token", "list", "--json", env=database.env())
    assert listed.returncode == 0, listed.stderr
    (token,) = json.loads(listed.stdout)
    for key in ("created_at", "expires_at"):
        parsed = datetime.fromisoformat(token[key])  # a space instead of T would still parse: check the text
        assert "T" in token[key] and parsed.utcoffset() is not None, token[key]
    assert token["revoked_at"] is None


def test_serve_tools_from_the_current_directory_without_pythonpath(database: TestDatabase, tmp_path: Path) -> None:
    """The README example: a module next to you, `mcp-gateway serve --tools mytools:mcp`."""
    readme = (REPO / "README.md").read_text()
    example = readme.split("Serve your own tools", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) == 5
    (tmp_path / "mytools.py").write_text(example)
    port = free_port()
    env = gateway_env(database, tmp_path / "data", port)
    env["PYTHONPATH"] = str(REPO)  # the gateway's code only: the current directory is not on it
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["mcp-gateway", "serve", "--tools", "mytools:mcp"], env=env, cwd=str(tmp_path),
                                stdout=out, stderr=subprocess.STDOUT)
    gateway = GatewayProcess(port=port, proc=proc, log_path=log, env=env)
    try:
        gateway.wait_ready()

        async def call() -> str:
            async with Client(gateway.mcp_url, auth=make_jwt("tia", "acme")) as client:
                return (await client.call_tool("shout", {"text": "found"})).data  # type: ignore[no-any-return]

        assert asyncio.run(call()) == "FOUND"
    finally:
        gateway.stop()
    # serve logs JSON: every line parses, and none carries uvicorn's colour-coded duplicate.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all("color_message" not in line for line in lines)
    assert not any("\x1b[" in line["msg"] or "%d" in line["msg"] for line in lines)


def test_the_package_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    """`project.license` is an SPDX string (setuptools >= 77): a build warns about nothing of ours."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path),
                             str(REPO)], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Deprecat" not in output and "deprecated" not in output, \
        [line for line in output.splitlines() if "eprecat" in line]
    (wheel,) = tmp_path.glob("mcp_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("/METADATA"))
    assert "License-Expression: Apache-2.0" in metadata
