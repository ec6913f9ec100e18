"""`mcp-gateway credentials list|revoke`: which users linked which upstreams (never a value); revoke one.

Listing reads metadata as the operator (a tenant admin of --tenant, or an auditor of every
tenant), so row-level security applies as it does to the API. Revoking clears the value through
the credential vault as that user; running gateways refuse the link from the next call on.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from gateway.cli.common import check_id, database_urls, load_settings, run, to_the_minute, with_db
from gateway.cli.reports import operator_principal
from gateway.errors import UserError

credentials_app = typer.Typer(no_args_is_help=True, help="Per-user upstream credentials (metadata; revoke).")


@credentials_app.command("list")
def credentials_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
                     as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """List linked upstream accounts per user (never a credential)."""
    from gateway.credentials.store import CredentialStore

    check_id(tenant, "--tenant")
    urls = database_urls(load_settings())
    principal = operator_principal(tenant)

    async def work(db: Any) -> list[dict[str, Any]]:
        return await CredentialStore(db, None).metadata(principal, everyone=True)

    rows = run(with_db(urls, work))
    for row in rows:
        row["linked"] = bool(row["linked"])
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no linked upstream accounts" + (f" for tenant {tenant}" if tenant else ""))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for column in ("tenant", "user", "upstream", "mode", "linked", "needs relink", "linked at", "last used"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(r["tenant_id"], r["user_id"], r["upstream"], r["mode"], "yes" if r["linked"] else "no",
                      "yes" if r["needs_relink"] else "", to_the_minute(r["linked_at"]),
                      to_the_minute(r["last_used_at"]))
    Console(width=None if sys.stdout.isatty() else 250).print(table)


@credentials_app.command("revoke")
def credentials_revoke(
    upstream: Annotated[str, typer.Argument(help="Upstream name")],
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    user: Annotated[str, typer.Option(help="User id")],
) -> None:
    """Forget a user's credential for an upstream; the user must link it again."""
    from gateway.credentials.store import CredentialStore

    for value, option in ((tenant, "--tenant"), (user, "--user"), (upstream, "UPSTREAM")):
        check_id(value, option)
    urls = database_urls(load_settings())
    if not run(with_db(urls, lambda db: CredentialStore(db, None).unlink(tenant, user, upstream))):
        raise UserError(f"{tenant}/{user} has no linked {upstream!r} account")
    typer.echo(f"revoked {tenant}/{user} {upstream}")
