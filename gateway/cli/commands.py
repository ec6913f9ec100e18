"""The `mcp-gateway` command.

Every command without MCP_GATEWAY_DATABASE_URL uses the embedded cluster in
MCP_GATEWAY_DATA_DIR, starting it if needed. Bad input anywhere: one line on stderr
naming the problem, exit code 2, nothing written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn

from auth.principal import ROLES
from gateway.cli.common import (
    database_urls,
    load_settings,
    migrate_database,
    require_embedded,
    run,
    to_the_minute,
    with_db,
)
from gateway.cli.credentials import credentials_app
from gateway.cli.doctor import doctor_command
from gateway.cli.reports import report_app, sql_command
from gateway.errors import UserError
from gateway.oauth.cli import oauth_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multi-user, authenticated MCP gateway with PostgreSQL row-level security.")
db_app = typer.Typer(no_args_is_help=True, help="The embedded PostgreSQL cluster.")
token_app = typer.Typer(no_args_is_help=True, help="Personal access tokens.")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(report_app, name="report")
app.add_typer(oauth_app, name="oauth")
app.add_typer(credentials_app, name="credentials")
app.command("sql")(sql_command)
app.command("doctor")(doctor_command)

if TYPE_CHECKING:
    from auth import AuthSettings
    from gateway.settings import Settings

# -- database ---------------------------------------------------------------------------------


@app.command("migrate")
def migrate_command() -> None:
    """Apply migrations/ then policies/ (safe when several start at once)."""
    report = migrate_database(database_urls(load_settings()))
    if report.applied:
        typer.echo(f"applied {len(report.applied)} migration(s): {', '.join(report.applied)}")
    else:
        typer.echo("database is up to date")
    typer.echo(f"policies applied: {len(report.policies)} file(s)")
    for warning in report.warnings:
        typer.secho(f"WARNING: {warning}", err=True, fg="yellow", bold=True)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded cluster (creating it on first use)."""
    settings = load_settings()
    require_embedded(settings)
    urls = database_urls(settings)
    typer.echo(f"embedded PostgreSQL running in {settings.data_dir} ({urls.admin})")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    from gateway.store.embedded import EmbeddedPostgres

    settings = load_settings()
    require_embedded(settings)
    stopped = EmbeddedPostgres(settings.data_dir).stop()
    typer.echo("stopped" if stopped else "not running")


@db_app.command("status")
def db_status() -> None:
    """Where the database is, whether it runs, and which migrations are applied."""
    from gateway.store.embedded import EmbeddedPostgres
    from gateway.store.migrate import status

    settings = load_settings()
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
    typer.echo(database_urls(load_settings()).admin)


# -- tokens -------------------------------------------------------------------------------------


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
    from gateway.store.tokens import create_token, parse_duration

    if role not in ROLES:
        raise UserError(f"--role {role!r}: expected {', '.join(ROLES[:-1])} or {ROLES[-1]}")
    if not tenant.strip() or not user.strip():
        raise UserError("--tenant and --user must not be empty")
    try:
        ttl = parse_duration(expires_in) if expires_in else None
    except ValueError as exc:
        raise UserError(f"--expires-in: {exc}") from None
    urls = database_urls(load_settings())
    if urls.embedded:  # a fresh embedded cluster is migrated on first use; a server of yours by `migrate`
        migrate_database(urls)
    _, plaintext = run(with_db(urls, lambda db: create_token(
        db, tenant_id=tenant, user_id=user, email=email, name=name, role=role, expires_in=ttl,
        token_name=token_name)))
    typer.echo(plaintext)


@token_app.command("list")
def token_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
               as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """List tokens (never their secrets)."""
    from gateway.store.tokens import list_tokens

    urls = database_urls(load_settings())
    tokens = run(with_db(urls, lambda db: list_tokens(db, tenant)))
    rows = [asdict(t) for t in tokens]  # TokenInfo: never the secret
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=_json_value))
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
                      *(to_the_minute(r.get(k)) for k in ("created_at", "expires_at", "revoked_at", "last_used_at")))
    Console(width=None if sys.stdout.isatty() else 250).print(table)


def _json_value(value: Any) -> Any:
    """Timestamps as ISO 8601 (2026-11-30T21:57:19.123456+00:00), anything else as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token id shown by `token list`")]) -> None:
    """Revoke a token; running gateways refuse it within 5 seconds."""
    import uuid

    from gateway.store.tokens import revoke_token

    try:
        uuid.UUID(token_id)
    except ValueError:
        raise UserError(f"{token_id!r} is not a token id (see `mcp-gateway token list`)") from None
    urls = database_urls(load_settings())
    if not run(with_db(urls, lambda db: revoke_token(db, token_id))):
        raise UserError(f"no active token with id {token_id}")
    typer.echo(f"revoked {token_id}")


# -- serving ---------------------------------------------------------------------------------


class GracefulServer(uvicorn.Server):
    """A SIGTERM/SIGINT that ended in a clean shutdown exits 0 (uvicorn would re-raise the signal).

    `on_started` runs once the app's start-up is complete and the sockets are served.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()


def _serve(settings: Settings, *, tools: list[str], config_path: Path | None, demo: bool, log_format: str,
           prepare: Callable[[Any, Settings], Callable[[], None]] | None = None, migrate: bool = True) -> None:
    """Check, bind, then touch the database, then serve.

    `prepare(urls, settings)` (dev) runs once the database is ready and returns what to run once serving.
    """
    from auth import AuthConfigError
    from gateway.cli.workers import inherited_listeners
    from gateway.config import load_config
    from gateway.http.listen import bind_listeners, bound_port
    from gateway.http.streams import complete_streams
    from gateway.logs import configure_logging
    from gateway.mcp.server import load_tools
    from gateway.wiring import create_app

    configure_logging(settings.log_format or log_format)
    # Everything a person can get wrong is checked before anything is started or written.
    config = load_config(config_path or settings.config)
    servers = [load_tools(spec) for spec in tools]
    auth_settings = _auth_settings(settings)
    # The port next: a clash must not start the database, end anyone's sessions or print a token.
    sockets = inherited_listeners()  # a worker of `serve --workers`: the supervisor bound them
    if sockets is None:
        sockets = bind_listeners(settings.host, settings.port)
        if settings.workers > 1:
            settings = settings.model_copy(update={"port": bound_port(sockets)})
            raise SystemExit(_supervise(settings, sockets, migrate=migrate))
    settings = settings.model_copy(update={"port": bound_port(sockets)})  # --port 0: the port the kernel chose
    urls = database_urls(settings)
    try:
        gateway_app = create_app(settings, urls, config=config, servers=servers, demo=demo,
                                 auth_settings=auth_settings)
    except AuthConfigError as exc:  # e.g. an unusable MCP_GATEWAY_PUBLIC_URL
        raise UserError(str(exc)) from None
    lock = gateway_app.services.instance.lock
    _hold_instance_id(lock)  # before migrating: a refused start writes nothing at all
    if migrate:
        migrate_database(urls)
    _hold_instance_id(lock)  # a fresh database has the runtime login only once migrated
    on_started = prepare(urls, settings) if prepare is not None else None
    log = logging.getLogger("mcp_gateway")
    public = settings.resolved_public_url

    def started() -> None:
        log.info("serving on %s/mcp (instance %s)", public, gateway_app.services.instance_id)
        if on_started is not None:
            on_started()

    server = GracefulServer(uvicorn.Config(
        complete_streams(gateway_app), host=settings.host, port=settings.port, log_config=None, lifespan="on",
        timeout_graceful_shutdown=5, access_log=False, server_header=False,
        # h11, whatever else is installed: uvicorn would switch to httptools when it can import it, which has
        # none of the limits below. Oversized bearer tokens must reach the verifier (401), not die in h11 (400).
        http="h11", h11_max_incomplete_event_size=4 * 1024 * 1024), on_started=started)
    server.run(sockets=sockets)  # a failed start-up exits 3 from inside uvicorn, after logging why


def _supervise(settings: Settings, sockets: list[socket.socket], *, migrate: bool) -> int:
    """`serve --workers N`: migrate once, then run N workers on these sockets (gateway/cli/workers.py)."""
    from gateway.cli.workers import Supervisor, worker_command

    urls = database_urls(settings)
    if migrate:
        migrate_database(urls)
    base = settings.instance_id or f"{socket.gethostname()}:{settings.port}"
    env = dict(os.environ, MCP_GATEWAY_PORT=str(settings.port), MCP_GATEWAY_WORKERS=str(settings.workers))
    logging.getLogger("mcp_gateway").info("serving on %s/mcp with %d workers", settings.resolved_public_url,
                                          settings.workers)
    return Supervisor(worker_command(sys.argv[1:]), sockets, base, settings.workers, env=env).run()


def _hold_instance_id(lock: Any) -> None:
    """Refuse to start while another live process holds this instance id (exit 2, nothing touched).

    A database that does not answer yet is no reason to refuse: the server takes the lock when it does.
    """
    from gateway.store.instance_lock import DatabaseUnavailable

    try:
        lock.acquire()
    except DatabaseUnavailable:
        pass


def _auth_settings(settings: Settings) -> AuthSettings:
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
    workers: Annotated[int | None, typer.Option(
        help="Worker processes on the one port, each with its own instance id and database pool "
             "[MCP_GATEWAY_WORKERS]", min=1, max=64)] = None,
) -> None:
    """Serve the gateway."""
    overrides = {name: value for name, value in (("host", host), ("port", port), ("workers", workers))
                 if value is not None}
    settings = load_settings().model_copy(update=overrides)
    _serve(settings, tools=tools or [], config_path=config, demo=False, log_format="json", migrate=migrate)


@app.command("dev")
def dev(
    port: Annotated[int | None, typer.Option(help="Listen port [MCP_GATEWAY_PORT]")] = None,
    tools: Annotated[list[str] | None, typer.Option("--tools", help="module:attr of a FastMCP server")] = None,
) -> None:
    """Embedded database, migrations, demo tools, a dev token and client configs: ready in one command."""
    from gateway.cli.devsetup import dev_token, embedded_description, print_dev_banner, print_dev_exit

    settings = load_settings().model_copy(update={"workers": 1})  # dev is one process; `serve --workers` scales out
    if port is not None:
        settings = settings.model_copy(update={"port": port})

    def prepare(urls: Any, serving: Settings) -> Callable[[], None]:
        token = run(with_db(urls, lambda db: dev_token(db, serving.data_dir)))
        where = embedded_description(serving.data_dir) if urls.embedded else "MCP_GATEWAY_DATABASE_URL"
        return lambda: print_dev_banner(serving.resolved_public_url, token, database=where)

    _serve(settings, tools=tools or [], config_path=None, demo=True, log_format="text", prepare=prepare)
    if settings.database_url is None:
        print_dev_exit(embedded_description(settings.data_dir))


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

