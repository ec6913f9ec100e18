"""The `mcp-gateway` command.

Every command without MCP_GATEWAY_DATABASE_URL uses the embedded cluster in
MCP_GATEWAY_DATA_DIR, starting it if needed. Bad input anywhere: one line on stderr
naming the problem, exit code 2, nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvicorn

from gateway.cli_credentials import credentials_app
from gateway.cli_reports import report_app, sql_command
from gateway.doctor import doctor_command
from gateway.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multi-user, authenticated MCP gateway with PostgreSQL row-level security.")
db_app = typer.Typer(no_args_is_help=True, help="The embedded PostgreSQL cluster.")
token_app = typer.Typer(no_args_is_help=True, help="Personal access tokens.")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(report_app, name="report")
app.add_typer(credentials_app, name="credentials")
app.command("sql")(sql_command)
app.command("doctor")(doctor_command)

T = TypeVar("T")


def _settings() -> Any:
    from pydantic import ValidationError

    from gateway.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "MCP_GATEWAY_" + str(first["loc"][0]).upper() if first["loc"] else "configuration"
        raise UserError(f"{name}: {first['msg']}") from None


def _urls(settings: Any) -> Any:
    from gateway.db import resolve_urls

    return resolve_urls(settings)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _migrate(urls: Any) -> Any:
    from gateway.db import url_password
    from gateway.migrate import migrate

    return migrate(urls.admin, login_password=url_password(urls.admin) if urls.derived_logins else None)


# -- database ---------------------------------------------------------------------------------


@app.command("migrate")
def migrate_command() -> None:
    """Apply migrations/ then policies/ (safe when several start at once)."""
    report = _migrate(_urls(_settings()))
    if report.applied:
        typer.echo(f"applied {len(report.applied)} migration(s): {', '.join(report.applied)}")
    else:
        typer.echo("database is up to date")
    typer.echo(f"policies applied: {len(report.policies)} file(s)")


@db_app.command("start")
def db_start() -> None:
    """Start the embedded cluster (creating it on first use)."""
    settings = _settings()
    _require_embedded(settings)
    urls = _urls(settings)
    typer.echo(f"embedded PostgreSQL running in {settings.data_dir} ({urls.admin})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    from gateway.embedded import EmbeddedPostgres

    settings = _settings()
    _require_embedded(settings)
    stopped = EmbeddedPostgres(settings.data_dir).stop()
    typer.echo("stopped" if stopped else "not running")


@db_app.command("status")
def db_status() -> None:
    """Where the database is, whether it runs, and which migrations are applied."""
    from gateway.embedded import EmbeddedPostgres
    from gateway.migrate import status

    settings = _settings()
    if settings.database_url is None:
        cluster = EmbeddedPostgres(settings.data_dir)
        running = cluster.is_running()
        typer.echo(f"embedded cluster: {settings.data_dir} ({'running' if running else 'stopped'})")
        if not running:
            return
        admin = cluster.url
    else:
        admin = settings.database_url.get_secret_value()
        typer.echo("external database: MCP_GATEWAY_DATABASE_URL")
    for name, state in status(admin):
        typer.echo(f"  {state:8} {name}")


@db_app.command("url")
def db_url() -> None:
    """Print the admin connection URL (for psql)."""
    typer.echo(_urls(_settings()).admin)


def _require_embedded(settings: Any) -> None:
    if settings.database_url is not None:
        raise UserError("MCP_GATEWAY_DATABASE_URL is set: the embedded cluster is not in use")


# -- tokens -------------------------------------------------------------------------------------


async def _with_db(urls: Any, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from gateway.db import Database

    async with Database(urls, min_size=1, max_size=2, application_name="mcp-gateway cli") as db:
        await db.pool.wait(timeout=15)
        return await work(db)


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option(help="Tenant id")],
    user: Annotated[str, typer.Option(help="User id (the token's subject)")],
    email: Annotated[str | None, typer.Option(help="Email")] = None,
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    role: Annotated[str, typer.Option(help="member, admin or auditor")] = "member",
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="e.g. 30d, 12h, 90m")] = None,
    token_name: Annotated[str | None, typer.Option("--token-name", help="A label for the token")] = None,
) -> None:
    """Create a token and print it (only the token, on stdout). It is shown once."""
    from gateway.tokens import create_token, parse_duration

    if role not in ("member", "admin", "auditor"):
        raise UserError(f"--role {role!r}: expected member, admin or auditor")
    if not tenant.strip() or not user.strip():
        raise UserError("--tenant and --user must not be empty")
    try:
        ttl = parse_duration(expires_in) if expires_in else None
    except ValueError as exc:
        raise UserError(f"--expires-in: {exc}") from None
    urls = _urls(_settings())
    if urls.embedded:  # a fresh embedded cluster is migrated on first use; a server of yours by `migrate`
        _migrate(urls)
    _, plaintext = _run(_with_db(urls, lambda db: create_token(
        db, tenant_id=tenant, user_id=user, email=email, name=name, role=role, expires_in=ttl,
        token_name=token_name)))
    typer.echo(plaintext)


@token_app.command("list")
def token_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
               as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """List tokens (never their secrets)."""
    from gateway.tokens import list_tokens

    urls = _urls(_settings())
    tokens = _run(_with_db(urls, lambda db: list_tokens(db, tenant)))
    rows = [asdict(t) for t in tokens]  # TokenInfo: never the secret
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no tokens" + (f" for tenant {tenant}" if tenant else ""))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for column in ("id", "prefix", "tenant", "user", "role", "created", "expires", "revoked", "last used"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(str(r.get("token_id") or ""), str(r.get("prefix") or ""), str(r.get("tenant_id") or ""),
                      str(r.get("user_id") or ""), str(r.get("role") or ""),
                      *(_when(r.get(k)) for k in ("created_at", "expires_at", "revoked_at", "last_used_at")))
    Console(width=None if sys.stdout.isatty() else 250).print(table)


def _when(value: Any) -> str:
    return str(value)[:16].replace("T", " ") if value else ""


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token id shown by `token list`")]) -> None:
    """Revoke a token; running gateways refuse it within 5 seconds."""
    import uuid

    from gateway.tokens import revoke_token

    try:
        uuid.UUID(token_id)
    except ValueError:
        raise UserError(f"{token_id!r} is not a token id (see `mcp-gateway token list`)") from None
    urls = _urls(_settings())
    if not _run(_with_db(urls, lambda db: revoke_token(db, token_id))):
        raise UserError(f"no active token with id {token_id}")
    typer.echo(f"revoked {token_id}")


# -- serving ---------------------------------------------------------------------------------


class GracefulServer(uvicorn.Server):
    """A SIGTERM/SIGINT that ended in a clean shutdown exits 0 (uvicorn would re-raise the signal)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def _serve(settings: Any, *, tools: list[str], config_path: Path | None, demo: bool, log_format: str,
           on_ready: Callable[[], None] | None = None, migrate: bool = True) -> None:
    from auth import AuthConfigError
    from gateway.app import create_app
    from gateway.config import load_config
    from gateway.logs import configure_logging
    from gateway.server import load_tools

    configure_logging(settings.log_format or log_format)
    # Everything a person can get wrong is checked before anything is started or written.
    config = load_config(config_path or settings.config)
    servers = [load_tools(spec) for spec in tools]
    auth_settings = _auth_settings(settings)
    urls = _urls(settings)
    try:
        gateway_app = create_app(settings, urls, config=config, servers=servers, demo=demo,
                                 auth_settings=auth_settings)
    except AuthConfigError as exc:  # e.g. an unusable MCP_GATEWAY_PUBLIC_URL
        raise UserError(str(exc)) from None
    if migrate:
        _migrate(urls)
    server = GracefulServer(uvicorn.Config(
        gateway_app, host=settings.host, port=settings.port, log_config=None, lifespan="on",
        timeout_graceful_shutdown=5, access_log=False, server_header=False,
        # Oversized bearer tokens must reach the verifier (401), not die in h11 (400).
        h11_max_incomplete_event_size=4 * 1024 * 1024))
    if on_ready is not None:
        on_ready()
    server.run()
    if not server.started:
        raise UserError(f"could not listen on {settings.host}:{settings.port} (is the port in use?)")


def _auth_settings(settings: Any) -> Any:
    """Token verification settings, checked before anything is started or written."""
    from auth import AuthConfigError, AuthSettings

    try:
        return AuthSettings.load(public_url=settings.resolved_public_url)
    except AuthConfigError as exc:
        raise UserError(str(exc)) from None


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [MCP_GATEWAY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [MCP_GATEWAY_PORT]")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config [MCP_GATEWAY_CONFIG]")] = None,
    tools: Annotated[list[str] | None, typer.Option("--tools", help="module:attr of a FastMCP server")] = None,
    migrate: Annotated[bool, typer.Option(
        "--migrate/--no-migrate",
        help="Apply migrations at start. --no-migrate: migrations run elsewhere (e.g. a one-shot "
             "`mcp-gateway migrate`), so this process needs no admin credentials.")] = True,
) -> None:
    """Serve the gateway."""
    settings = _settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    _serve(settings, tools=tools or [], config_path=config, demo=False, log_format="json", migrate=migrate)


@app.command("dev")
def dev(
    port: Annotated[int | None, typer.Option(help="Listen port [MCP_GATEWAY_PORT]")] = None,
    tools: Annotated[list[str] | None, typer.Option("--tools", help="module:attr of a FastMCP server")] = None,
) -> None:
    """Embedded database, migrations, demo tools, a dev token and client configs: ready in one command."""
    from gateway.devsetup import dev_token, print_client_configs

    settings = _settings()
    if port is not None:
        settings.port = port
    _auth_settings(settings)
    urls = _urls(settings)
    _migrate(urls)
    token = _run(_with_db(urls, lambda db: dev_token(db, settings.data_dir)))
    _serve(settings, tools=tools or [], config_path=None, demo=True, log_format="text",
           on_ready=lambda: print_client_configs(settings.resolved_public_url + "/mcp", token))


# -- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    try:
        # Non-standalone click returns the code of a `typer.Exit(code)` instead of exiting.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        print(f"mcp-gateway: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        print("mcp-gateway: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # Usage errors (typer's vendored click) arrive here in non-standalone mode.
        format_message = getattr(exc, "format_message", None)
        if format_message is None:
            raise
        print(f"mcp-gateway: error: {format_message()}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2) or 2)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

