"""`mcp-gateway report costs` and `mcp-gateway sql`: the operator's views of the data.

The CLI is the operator, but it still reads through row-level security:
- `report costs --tenant T` runs as a tenant admin of T; without --tenant as an auditor
  (every tenant). `--user U` narrows further.
- `sql --tenant T` runs in the admin SQL console with T's signed scope, `--all-tenants`
  with the auditor scope: the same code path (gateway.mcp.sqlconsole) as POST /api/sql and
  the MCP tool run_sql, on the console login.
Errors: one line, exit code 2 (UserError).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gateway.cli.common import (
    cell,
    check_format,
    check_id,
    database_error,
    database_urls,
    load_settings,
    operator_principal,
    run,
    with_db,
)
from gateway.errors import UserError

if TYPE_CHECKING:
    from rich.table import Table

    from gateway.store.db import Database, DatabaseUrls
    from gateway.store.reports import CostReport

T = TypeVar("T")

report_app = typer.Typer(no_args_is_help=True, help="Usage and cost reports.")


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
    from gateway.store.reports import GROUP_BYS, ReportError, cost_report, resolve_range

    if by not in GROUP_BYS:
        raise UserError(f"--by {by!r}: expected one of {', '.join(GROUP_BYS)}")
    check_format(output)
    check_id(tenant, "--tenant")
    check_id(user, "--user")
    try:
        resolve_range(since, until)  # bad dates fail before touching the database
    except ReportError as exc:
        raise UserError(f"--{exc.param}: {str(exc).split(': ', 1)[-1]}") from None
    urls = database_urls(load_settings())
    principal = operator_principal(tenant)

    async def work(db: Any) -> Any:
        return await cost_report(db, principal, since=since, until=until, group_by=by, tenant_id=tenant,
                                 user_id=user, upstreams=_upstream_names(load_settings()) if by == "upstream" else ())

    report = _run_refusing(urls, work, ReportError)
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

    Console(width=max(120, Console().width)).print(costs_table(report, f"Costs by {by} — {scope}, {period}"))


def _run_refusing(urls: DatabaseUrls, work: Callable[[Database], Coroutine[Any, Any, T]],
                  refusal: type[Exception]) -> T:
    """Run `work` against the database. Its own refusal (`refusal`: a bad range, a refused query) and any
    database failure end the command as one-line UserErrors; anything else is a bug and is raised."""
    try:
        return run(with_db(urls, work))
    except refusal as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        database_error(exc)


_KEY_COLUMNS = ("tenant_id", "user_id", "tool_name", "day", "client_type")


def costs_table(report: CostReport, title: str) -> Table:
    """The report as a rich table: key columns left, figures right, a totals row; an empty key is `(none)`."""
    from rich.table import Table

    table = Table(title=title)
    for column in report.columns:
        table.add_column(column, justify="left" if column in _KEY_COLUMNS else "right")
    for row in report.rows:
        table.add_row(*(cell(row[c], empty="(none)") for c in report.columns))
    keys = len(report.columns) - len(report.totals)
    table.add_section()
    table.add_row(*(["total"] + [""] * (keys - 1)), *(cell(report.totals[c]) for c in report.columns[keys:]))
    return table


def sql_command(
    query: Annotated[str, typer.Argument(help="Exactly one SELECT")],
    tenant: Annotated[str | None, typer.Option(help="Run in this tenant's scope (as its tenant admin)")] = None,
    all_tenants: Annotated[bool, typer.Option("--all-tenants", help="Run in the auditor scope (every tenant)")]
    = False,
    output: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """Admin SQL console: one read-only SELECT, tenant-scoped by row-level security."""
    from gateway.mcp.sqlconsole import ConsoleError, SqlConsole, limits_from, validate_sql

    if (tenant is None) == (not all_tenants):
        raise UserError("give exactly one of --tenant T or --all-tenants")
    check_format(output)
    check_id(tenant, "--tenant")
    try:
        validate_sql(query)  # refused queries fail before touching the database
    except ConsoleError as exc:
        raise UserError(f"refused: {exc}") from None
    settings = load_settings()
    urls = database_urls(settings)
    principal = operator_principal(tenant)

    async def work(db: Any) -> Any:
        console = SqlConsole(urls, db, limits=limits_from(settings))
        return await console.run(principal, query)

    result = _run_refusing(urls, work, ConsoleError)
    if output == "json":
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    if output == "csv":
        from gateway.csvsafe import to_csv

        sys.stdout.write(to_csv(result.columns, result.rows))  # formula-like text escaped, numbers as numbers
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*(cell(v) for v in row))
        Console().print(table)
        typer.echo(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")
    if result.truncated:
        print(f"mcp-gateway: warning: truncated at {len(result.rows)} rows", file=sys.stderr)


def _upstream_names(settings: Any) -> list[str]:
    """Upstream names from MCP_GATEWAY_CONFIG (for --by upstream); none when no config is set."""
    from gateway.config import load_config

    return [u.name for u in load_config(settings.config).upstreams] if settings.config else []
