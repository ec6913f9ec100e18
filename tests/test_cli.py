"""Bad input anywhere: one line naming the problem, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.gateway_proc import REPO
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
