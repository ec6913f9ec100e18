"""docs/operations.md's configuration reference is generated (and current); the docs' snippets work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from gateway import docgen
from tests.gateway_proc import REPO

DOCS = REPO / "docs"


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def test_configuration_reference_is_generated_from_the_settings_models() -> None:
    current = docgen.DOC.read_text()
    assert docgen.splice(current, docgen.generate()) == current, \
        "docs/operations.md is out of date: run `python -m gateway.docgen`"
    check = subprocess.run([sys.executable, "-m", "gateway.docgen", "--check"], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_every_setting_is_documented() -> None:
    from auth.settings import AuthSettings
    from gateway.settings import Settings

    text = docgen.DOC.read_text()
    for name in (*Settings.model_fields, *AuthSettings.model_fields):
        assert f"`MCP_GATEWAY_{name.upper()}`" in text, name
    undescribed = {n for n, f in AuthSettings.model_fields.items() if not f.description}  # described in the model
    assert undescribed - set(Settings.model_fields) <= set(docgen.AUTH_DESCRIPTIONS)


def test_client_config_snippets_are_valid_json() -> None:
    snippets = blocks(DOCS / "clients.md", "json")
    assert len(snippets) >= 6
    for snippet in snippets:
        config = json.loads(snippet)
        servers = config.get("mcpServers") or config.get("servers")
        assert servers and "mcp-gateway" in servers
        entry = servers["mcp-gateway"]
        assert "/mcp" in json.dumps(entry)
        headers = entry.get("headers") or {}
        assert any("Bearer" in v for v in headers.values()) or "AUTH_HEADER" in json.dumps(entry)


def test_retention_sql_keeps_recent_rows_and_rollups(admin_conn: psycopg.Connection) -> None:
    (sql,) = [b for b in blocks(DOCS / "operations.md", "sql") if "-- retention" in b]
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=120), now - timedelta(days=3)
    admin_conn.execute("INSERT INTO gateway.tenants (tenant_id) VALUES ('acme')")
    admin_conn.execute("INSERT INTO gateway.users (tenant_id, user_id) VALUES ('acme', 'alice')")
    sessions = {}
    for label, at in (("old", old), ("recent", recent), ("open", old)):
        sid = uuid.uuid4()
        sessions[label] = sid
        ended = label != "open"
        admin_conn.execute(
            "INSERT INTO gateway.mcp_sessions (session_id, tenant_id, user_id, status, connected_at, last_activity,"
            " disconnected_at, total_duration, disconnect_reason, session_key) VALUES"
            " (%s, 'acme', 'alice', %s, %s, %s, %s, %s, %s, %s)",
            (sid, "disconnected" if ended else "active", at, at, at if ended else None, 1.0 if ended else None,
             "client_disconnect" if ended else None, f"k-{label}"))
        admin_conn.execute(
            "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, tool_name, status, \"timestamp\")"
            " VALUES (%s, %s, 'acme', 'alice', 'echo', 'success', %s)", (uuid.uuid4(), sid, at))
    rollup_before = admin_conn.execute("SELECT sum(calls) FROM gateway.usage_daily").fetchone()[0]
    assert rollup_before == 3

    admin_conn.execute(sql.encode())

    left = admin_conn.execute("SELECT session_id FROM gateway.mcp_requests").fetchall()
    assert [r[0] for r in left] == [sessions["recent"]]
    kept = {r[0] for r in admin_conn.execute("SELECT session_id FROM gateway.mcp_sessions").fetchall()}
    assert kept == {sessions["recent"], sessions["open"]}  # an open session is never pruned
    assert admin_conn.execute("SELECT sum(calls) FROM gateway.usage_daily").fetchone()[0] == rollup_before


def test_docs_link_only_inside_the_repository() -> None:
    """The docs ship with the code: every link resolves in the repository, none points elsewhere."""
    outside = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or not (doc.parent / target.split("#")[0]).exists():
                outside.append(f"{doc.name}: {target}")
    assert outside == []
