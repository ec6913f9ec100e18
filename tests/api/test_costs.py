"""Cost reports: totals equal the raw rows they summarise (today included), per role; CSV; CLI."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from gateway.cli.commands import main
from tests.api.conftest import PRINCIPALS, ApiEnv
from tests.api.seed import MARKER, A, B

RAW = {  # who -> WHERE over raw mcp_requests, written independently of RLS
    "member": ("tenant_id = %s AND user_id = %s", (A, "alice")),
    "admin": ("tenant_id = %s", (A,)),
    "auditor": ("true", ()),
    "other_member": ("tenant_id = %s AND user_id = %s", (B, "alice")),
    "other_admin": ("tenant_id = %s", (B,)),
}


def _raw(api_env: ApiEnv, who: str, key: str, since_days: int = 60,
         n: int = 1) -> dict[tuple[str, ...], dict[str, Any]]:
    where, params = RAW[who]
    with api_env.admin() as conn:
        rows = conn.execute(
            f"SELECT {key}, count(*), count(*) FILTER (WHERE status = 'error'),"
            " count(*) FILTER (WHERE status = 'denied'), sum(prompt_tokens), sum(completion_tokens),"
            " sum(estimated_cost) FROM gateway.mcp_requests"
            f" WHERE {where} AND (\"timestamp\" AT TIME ZONE 'UTC')::date >= current_date - %s"
            f" GROUP BY {key}", (*params, since_days)).fetchall()
    return {tuple(str(v) for v in r[:n]): {"calls": r[n], "errors": r[n + 1], "denied": r[n + 2],
                                          "prompt_tokens": r[n + 3], "completion_tokens": r[n + 4],
                                          "cost": Decimal(r[n + 5])} for r in rows}


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_per_user_report_equals_raw_rows(api_env: ApiEnv, who: str) -> None:
    r = api_env.get(who, "/api/reports/costs", since="60d", group_by="user")
    assert r.status_code == 200, r.text
    body = r.json()
    got = {(row["tenant_id"], row["user_id"]): row for row in body["rows"]}
    expected = _raw(api_env, who, "tenant_id, user_id", n=2)
    assert set(got) == set(expected)
    for key, exp in expected.items():
        row = got[key]
        for metric in ("calls", "errors", "denied", "prompt_tokens", "completion_tokens"):
            assert row[metric] == exp[metric], (key, metric)
        assert Decimal(row["cost"]) == exp["cost"] and isinstance(row["cost"], str)
        assert row["total_tokens"] == exp["prompt_tokens"] + exp["completion_tokens"]
    assert body["totals"]["calls"] == sum(e["calls"] for e in expected.values())
    assert Decimal(body["totals"]["cost"]) == sum((e["cost"] for e in expected.values()), Decimal(0))
    if who in ("member", "admin"):
        assert MARKER not in r.text


@pytest.mark.parametrize("group_by,key", [("tool", "coalesce(tool_name, '')"),
                                          ("client", "coalesce(client_type, '')"),
                                          ("day", "(\"timestamp\" AT TIME ZONE 'UTC')::date")])
def test_other_groupings_equal_raw_rows(api_env: ApiEnv, group_by: str, key: str) -> None:
    body = api_env.get("admin", "/api/reports/costs", since="60d", group_by=group_by).json()
    column = {"tool": "tool_name", "client": "client_type", "day": "day"}[group_by]
    got = {(row[column],): row for row in body["rows"]}
    expected = _raw(api_env, "admin", key)
    assert set(got) == set(expected)
    for k, exp in expected.items():
        assert got[k]["calls"] == exp["calls"] and Decimal(got[k]["cost"]) == exp["cost"]
    if group_by == "day":
        assert [row["day"] for row in body["rows"]] == sorted(row["day"] for row in body["rows"])


def test_today_is_included_and_live(api_env: ApiEnv) -> None:
    """A request written now shows up in today's report at once (the rollup is transactional)."""
    today = api_env.get("admin", "/api/reports/costs", since="today", group_by="user").json()
    before = {r["user_id"]: r for r in today["rows"]}
    assert before["alice"]["calls"] == 2  # the two requests of minutes ago
    assert Decimal(before["alice"]["cost"]) == Decimal("0.0135")


def test_date_window_is_inclusive_and_relative_forms_work(api_env: ApiEnv) -> None:
    all_days = api_env.get("auditor", "/api/reports/costs", since="60d", group_by="day").json()
    days = [row["day"] for row in all_days["rows"]]
    one = days[1]
    single = api_env.get("auditor", "/api/reports/costs", since=one, until=one, group_by="day").json()
    assert [row["day"] for row in single["rows"]] == [one]  # until is inclusive
    week = api_env.get("auditor", "/api/reports/costs", since="7d", group_by="day").json()
    assert week["rows"] and all(row["day"] >= week["since"] for row in week["rows"])
    hours = api_env.get("auditor", "/api/reports/costs", since="24h", group_by="day").json()
    assert len(hours["rows"]) <= 2


def test_csv_has_a_header_row_and_the_same_numbers(api_env: ApiEnv) -> None:
    r = api_env.get("admin", "/api/reports/costs", since="60d", group_by="user", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    as_json = api_env.get("admin", "/api/reports/costs", since="60d", group_by="user").json()
    assert [(x["user_id"], x["calls"], x["cost"]) for x in rows] == \
           [(x["user_id"], str(x["calls"]), x["cost"]) for x in as_json["rows"]]
    assert r.text.splitlines()[0] == ",".join(as_json["columns"])


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(api_env: ApiEnv, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """`mcp-gateway ...` in this process (same entry point as the console script), env of the gateway."""
    for key, value in api_env.gateway.env.items():
        if key.startswith("MCP_GATEWAY_"):
            monkeypatch.setenv(key, value)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


def test_cli_report_costs(api_env: ApiEnv, cli: Callable[..., CliResult]) -> None:
    out = cli("report", "costs", "--tenant", A, "--since", "60d", "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    expected = _raw(api_env, "admin", "tenant_id, user_id", n=2)
    assert {(r["tenant_id"], r["user_id"]): r["calls"] for r in report["rows"]} == \
           {k: v["calls"] for k, v in expected.items()}
    table = cli("report", "costs", "--since", "60d", "--by", "tool")
    assert table.returncode == 0 and "zz-secret-tool" in table.stdout and "total" in table.stdout
    csv_out = cli("report", "costs", "--tenant", A, "--user", "bob", "--since", "60d", "--format", "csv")
    assert csv_out.returncode == 0 and csv_out.stdout.splitlines()[0].startswith("tenant_id,user_id,calls")
    assert [line.split(",")[1] for line in csv_out.stdout.splitlines()[1:]] == ["bob"]
    empty = cli("report", "costs", "--tenant", "nobody-here")
    assert empty.returncode == 0 and empty.stdout.startswith("No usage for tenant nobody-here")
    for bad in (["--by", "planet"], ["--since", "yesterdayish"], ["--format", "xml"],
                ["--since", "2026-11-10", "--until", "2026-11-01"]):
        result = cli("report", "costs", *bad)
        assert result.returncode == 2 and result.stdout == "", (bad, result)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_sql(cli: Callable[..., CliResult]) -> None:
    ok = cli("sql", "--tenant", A, "SELECT DISTINCT tenant_id FROM gateway.mcp_requests", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rows"] == [[A]]
    both = cli("sql", "--all-tenants", "SELECT DISTINCT tenant_id FROM gateway.mcp_requests ORDER BY 1",
                "--format", "csv")
    assert both.returncode == 0 and both.stdout.splitlines() == ["tenant_id", A, B]
    table = cli("sql", "--tenant", B, "SELECT count(*) FROM mcp_sessions")
    assert table.returncode == 0 and "3" in table.stdout
    for args, message in [
        (["--tenant", A, "SELECT set_config('role', 'mcp_gateway_auditor', true)"], "set_config is not allowed"),
        (["--tenant", A, "DELETE FROM gateway.mcp_requests"], "only a single SELECT"),
        (["SELECT 1"], "--tenant"),
        (["--tenant", A, "--all-tenants", "SELECT 1"], "--tenant"),
        (["--tenant", A, "SELECT * FROM mcp_gateway_private.console_keys"],
         "relation mcp_gateway_private.console_keys is not allowed"),
        (["--tenant", A, "SELECT nosuchcolumn FROM gateway.users"], "nosuchcolumn"),
    ]:
        result = cli("sql", *args)
        assert result.returncode == 2 and result.stdout == "", (args, result)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
