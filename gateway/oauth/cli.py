"""`mcp-gateway oauth grants` / `mcp-gateway oauth revoke GRANT_ID`: the operator's view of the
authorization server's grants (which client may act as which user)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

import typer

from gateway.errors import UserError

oauth_app = typer.Typer(no_args_is_help=True, help="The OAuth authorization server: grants to clients.")


@oauth_app.command("grants")
def grants(tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
           user: Annotated[str | None, typer.Option(help="Only this user")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """List grants (client, user, scope, last use; never a token)."""
    from gateway.cli.common import database_urls, load_settings, run, with_db
    from gateway.oauth.store import OAuthStore

    rows = run(with_db(database_urls(load_settings()), lambda db: OAuthStore(db).list_grants(tenant, user)))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no grants")
        return
    for r in rows:
        state = f"revoked {str(r['revoked_at'])[:16]}" if r["revoked_at"] else "active"
        typer.echo(f"{r['grant_id']}  {r['tenant_id']}/{r['user_id']}  {r['client_name'] or r['client_id']}"
                   f"  scope={r['scope'] or '-'}  last used {str(r['last_used_at'] or '-')[:16]}  {state}")


@oauth_app.command("revoke")
def revoke(grant_id: Annotated[str, typer.Argument(help="The grant id shown by `oauth grants`")]) -> None:
    """Revoke a grant and every token issued under it; running gateways refuse them within 5 seconds."""
    from gateway.cli.common import database_urls, load_settings, run, with_db
    from gateway.oauth.store import OAuthStore

    try:
        uuid.UUID(grant_id)
    except ValueError:
        raise UserError(f"{grant_id!r} is not a grant id (see `mcp-gateway oauth grants`)") from None
    urls = database_urls(load_settings())
    revoked = run(with_db(urls, lambda db: OAuthStore(db).revoke_grant(grant_id, reason="admin")))
    if not revoked:
        raise UserError(f"no active grant with id {grant_id}")
    typer.echo(f"revoked {grant_id}")
