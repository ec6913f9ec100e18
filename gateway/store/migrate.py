"""Apply migrations/*.sql once each, in order, then policies/*.sql every time.

One connection holds a PostgreSQL advisory lock for the whole run, so several
`mcp-gateway migrate` started at once serialise: the first applies, the others
find nothing left to do. Each applied file is recorded with its SHA-256; a file
edited after it was applied is refused by name. Migrations run as the owner role
(mcp_gateway_owner) so no object is owned by a superuser; a file whose first line
is `-- run as: admin` runs as the connecting user (it creates the roles).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import scalar_row

import gateway
from gateway.errors import UserError
from gateway.formatting import pg_message
from gateway.store.db import ROLLED_BACK

# Located from the package, not from this file, so the module may live in any sub-package.
GATEWAY_PACKAGE = Path(gateway.__file__).resolve().parent
PROJECT_ROOT = GATEWAY_PACKAGE.parent
PACKAGED_SQL = GATEWAY_PACKAGE / "sql"  # a wheel's copy (setup.py); absent in a checkout
_ROLLBACK_RETRIES = 5  # a file PostgreSQL aborted as a deadlock victim is run again, this many times in all


def _sql_dir(name: str) -> Path:
    packaged = PACKAGED_SQL / name
    return packaged if packaged.is_dir() else PROJECT_ROOT / name


MIGRATIONS_DIR = _sql_dir("migrations")
POLICIES_DIR = _sql_dir("policies")
OWNER_ROLE = "mcp_gateway_owner"
LOGIN_ROLES = ("mcp_gateway_app", "mcp_gateway_console")
_LOCK_KEY = 0x6D63_7067_776D  # "mcpgwm": one constant for every gateway database
_NAME = re.compile(r"^\d{3,}_[a-z0-9_]+\.sql$")


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _sql_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise UserError(f"{directory} is missing: the migrations ship with the project checkout")
    files = sorted(p for p in directory.iterdir() if p.suffix == ".sql")
    for path in files:
        if not _NAME.match(path.name):
            raise UserError(f"{path}: SQL file names must look like 001_name.sql (lower case)")
    return files


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _runs_as_admin(text: str) -> bool:
    return text.lstrip().startswith("-- run as: admin")


def migrate(admin_url: str, *, login_password: str | None = None,
            migrations_dir: Path = MIGRATIONS_DIR, policies_dir: Path = POLICIES_DIR) -> MigrationReport:
    """Bring the database at `admin_url` up to date. Safe to run concurrently.

    `login_password`: when the app/console logins are derived from the admin URL,
    they get its password so the gateway can log in with them.
    """
    report = MigrationReport()
    migrations = _sql_files(migrations_dir)
    policies = _sql_files(policies_dir)
    try:
        conn = psycopg.connect(admin_url, autocommit=True, application_name="mcp-gateway migrate")
    except psycopg.OperationalError as exc:
        raise UserError(f"cannot connect to the database: {pg_message(exc)}") from None
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS mcp_gateway_meta")
        conn.execute("REVOKE ALL ON SCHEMA mcp_gateway_meta FROM PUBLIC")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS mcp_gateway_meta.migrations ("
            " filename text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied: dict[str, str] = dict(conn.execute("SELECT filename, checksum FROM mcp_gateway_meta.migrations")
                                       .fetchall())
        for path in migrations:
            digest = _checksum(path)
            if path.name in applied:
                if applied[path.name] != digest:
                    raise UserError(
                        f"migration {path.name} was edited after it was applied "
                        "(add a new migration instead of changing an applied one)"
                    )
                report.already.append(path.name)
                continue
            text = path.read_text()
            _run_file(conn, path, text, as_owner=not _runs_as_admin(text), record=digest)
            report.applied.append(path.name)
        for path in policies:
            _run_file(conn, path, path.read_text(), as_owner=True, record=None)
            report.policies.append(path.name)
        report.warnings.extend(_hardening_warnings(conn))
        if login_password:
            for role in LOGIN_ROLES:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                       sql.Literal(login_password)))
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return report


def _run_file(conn: psycopg.Connection, path: Path, text: str, *, as_owner: bool, record: str | None) -> None:
    """One file in one transaction. Policies run at every start, beside replicas already serving: a file
    PostgreSQL aborts to break a deadlock with their work (or a serialization failure) is run again."""
    for attempt in range(1, _ROLLBACK_RETRIES + 1):
        try:
            with conn.transaction():
                if as_owner:
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(OWNER_ROLE)))
                conn.execute(text.encode())  # bytes: no client-side parameter parsing of '%'
                if record is not None:
                    conn.execute("RESET ROLE")
                    conn.execute("INSERT INTO mcp_gateway_meta.migrations (filename, checksum) VALUES (%s, %s)",
                                 (path.name, record))
            return
        except ROLLED_BACK as exc:
            if attempt == _ROLLBACK_RETRIES:
                raise UserError(f"{path.parent.name}/{path.name} failed: {pg_message(exc)}") from None
            time.sleep(random.uniform(0.05, 0.2) * attempt)  # the other side finishes meanwhile
        except psycopg.Error as exc:
            raise UserError(f"{path.parent.name}/{path.name} failed: {pg_message(exc)}") from None


def _hardening_warnings(conn: psycopg.Connection) -> list[str]:
    from gateway.store.console_hardening import WARNING, open_channels

    found = open_channels(conn)
    return [WARNING.format(", ".join(found))] if found else []


def status(admin_url: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[tuple[str, str]]:
    """(filename, state) for every migration: applied, pending, or edited."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.cursor(row_factory=scalar_row).execute(
            "SELECT to_regclass('mcp_gateway_meta.migrations') IS NOT NULL").fetchone()
        applied: dict[str, str] = {}
        if exists:
            applied = dict(conn.execute("SELECT filename, checksum FROM mcp_gateway_meta.migrations").fetchall())
    rows = []
    for path in _sql_files(migrations_dir):
        if path.name not in applied:
            rows.append((path.name, "pending"))
        elif applied[path.name] != _checksum(path):
            rows.append((path.name, "edited"))
        else:
            rows.append((path.name, "applied"))
    return rows


