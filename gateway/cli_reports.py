"""`mcp-gateway report costs` and `mcp-gateway sql`: the operator's views of the data.

The CLI is the operator, but it still reads through row-level security:
- `report costs --tenant T` runs as a tenant admin of T; without --tenant as an auditor
  (every tenant). `--user U` narrows further.
- `sql --tenant T` runs in the admin SQL console with T's signed scope, `--all-tenants`
  with the auditor scope: the same code path (gateway.sqlconsole) as POST /api/sql and
  the MCP tool run_sql, on the console login.
Errors: one line, exit code 2 (UserError).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Annotated, Any

import typer

from gateway.errors import UserError

report_app = typer.Typer(no_args_is_help=True, help="Usage and cost reports.")

OPERATOR_USER = "cli"
ALL_TENANTS = "*"  # identity of the auditor principal used for all-tenant reads (any non-empty value)


def operator_principal(tenant: str | None) -> Any:
    """A tenant admin of `tenant`, or an auditor (all tenants) when it is None."""
    from auth import Principal

    if tenant is None:
        return Principal(user_id=OPERATOR_USER, tenant_id=ALL_TENANTS, role="auditor", token_kind="pat",
                         name="mcp-gateway CLI")
    return Principal(user_id=OPERATOR_USER, tenant_id=tenant, role="admin", token_kind="pat",
                     name="mcp-gateway CLI")


def _check_id(value: str | None, option: str) -> None:
    if value is not None and (not value.strip() or "\x00" in value or len(value) > 500):
        raise UserError(f"{option} {value!r}: not a valid id")


@report_app.command("costs")
def report_costs(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (default: every tenant)")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user")] = None,
    since: Annotated[str | None, typer.Option(help="First UTC day, inclusive: 2026-11-01, 7d, 24h (default 30d)")]
    = None,
    until: Annotated[str | None, typer.Option(help="Last UTC day, inclusive (default today)")] = None,
    by: Annotated[str, typer.Option("--by", help="user, tool, day, client or upstream")] = "user",
    output: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """Calls, errors, tokens and cost per user (tool, day, client) from the daily rollup."""
    from gateway import cli
    from gateway.reports import GROUP_BYS, ReportError, cost_report, resolve_range

    if by not in GROUP_BYS:
        raise UserError(f"--by {by!r}: expected one of {', '.join(GROUP_BYS)}")
    if output not in ("table", "csv", "json"):
        raise UserError(f"--format {output!r}: expected table, csv or json")
    _check_id(tenant, "--tenant")
    _check_id(user, "--user")
    try:
        resolve_range(since, until)  # bad dates fail before touching the database
    except ReportError as exc:
        raise UserError(f"--{exc.param}: {str(exc).split(': ', 1)[-1]}") from None
    urls = cli._urls(cli._settings())
    principal = operator_principal(tenant)

    async def work(db: Any) -> Any:
        return await cost_report(db, principal, since=since, until=until, group_by=by, tenant_id=tenant,
                                 user_id=user, upstreams=_upstream_names(cli._settings()) if by == "upstream" else ())

    try:
        report = cli._run(cli._with_db(urls, work))
    except ReportError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        _database_error(exc)
    if output == "json":
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    if output == "csv":
        sys.stdout.write(report.to_csv())
        return
    scope = f"tenant {tenant}" if tenant else "all tenants"
    scope += f", user {user}" if user else ""
    period = f"{report.since.isoformat()} .. {report.until.isoformat()} (UTC, inclusive)"
    if not report.rows:
        typer.echo(f"No usage for {scope} in {period}.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Costs by {by} — {scope}, {period}")
    for column in report.columns:
        table.add_column(column, justify="right" if column not in ("tenant_id", "user_id", "tool_name", "day",
                                                                    "client_type") else "left")
    for row in report.rows:
        table.add_row(*(_cell(row[c]) for c in report.columns))
    keys = len(report.columns) - len(report.totals)
    table.add_section()
    table.add_row(*(["total"] + [""] * (keys - 1)), *(_cell(report.totals[c]) for c in report.columns[keys:]))
    Console(width=max(120, Console().width)).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if value == "":
        return "(none)"
    return str(value)


def _database_error(exc: Exception) -> None:
    import psycopg

    if isinstance(exc, psycopg.Error):
        text = (getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)).strip().splitlines()
        hint = " (run `mcp-gateway migrate`?)" if isinstance(exc, psycopg.errors.UndefinedTable) else ""
        raise UserError(f"database error: {text[0] if text else type(exc).__name__}{hint}") from None
    raise exc


def sql_command(
    query: Annotated[str, typer.Argument(help="Exactly one SELECT")],
    tenant: Annotated[str | None, typer.Option(help="Run in this tenant's scope (as its tenant admin)")] = None,
    all_tenants: Annotated[bool, typer.Option("--all-tenants", help="Run in the auditor scope (every tenant)")]
    = False,
    output: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """Admin SQL console: one read-only SELECT, tenant-scoped by row-level security."""
    from gateway import cli
    from gateway.sqlconsole import ConsoleError, SqlConsole, validate_sql

    if (tenant is None) == (not all_tenants):
        raise UserError("give exactly one of --tenant T or --all-tenants")
    if output not in ("table", "csv", "json"):
        raise UserError(f"--format {output!r}: expected table, csv or json")
    _check_id(tenant, "--tenant")
    try:
        validate_sql(query)  # refused queries fail before touching the database
    except ConsoleError as exc:
        raise UserError(f"refused: {exc}") from None
    urls = cli._urls(cli._settings())
    principal = operator_principal(tenant)

    async def work(db: Any) -> Any:
        console = SqlConsole(urls, db)
        return await console.run(principal, query)

    try:
        result = cli._run(cli._with_db(urls, work))
    except ConsoleError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        _database_error(exc)
    if output == "json":
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    if output == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow([_cell(v) for v in row])
        sys.stdout.write(out.getvalue())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*(_cell(v) for v in row))
        Console().print(table)
        typer.echo(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")
    if result.truncated:
        print(f"mcp-gateway: warning: truncated at {len(result.rows)} rows", file=sys.stderr)


def _cell(value: Any) -> str:
    """One result value as text: empty for NULL, JSON for json/array values."""
    if value is None:
        return ""
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def _upstream_names(settings: Any) -> list[str]:
    """Upstream names from MCP_GATEWAY_CONFIG (for --by upstream); none when no config is set."""
    from gateway.config import load_config

    return [u.name for u in load_config(settings.config).upstreams] if settings.config else []
