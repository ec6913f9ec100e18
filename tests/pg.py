"""A real PostgreSQL for the test suite, and a fresh migrated database per test.

Where the server comes from, in order: MCP_GATEWAY_TEST_DATABASE_URL; testcontainers
when a Docker engine answers; the embedded launcher in a temporary directory. If
none works the run fails loudly: database tests are never skipped.

Each test gets its own database cloned from a migrated template (FILE_COPY is a
file copy, ~tens of ms), so tests may commit freely and run in any order.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from gateway.store.db import APP_LOGIN, CONSOLE_LOGIN, DatabaseUrls, url_password, with_user
from gateway.store.migrate import MIGRATIONS_DIR, migrate

_ROLES_SQL = (MIGRATIONS_DIR / "000_roles.sql").read_bytes()


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers' dependency

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@dataclass
class Server:
    admin_url: str          # superuser-capable URL on the maintenance database
    embedded_dir: str | None = None


@contextmanager
def start_server() -> Iterator[Server]:
    env_url = os.environ.get("MCP_GATEWAY_TEST_DATABASE_URL")
    if env_url:
        yield Server(env_url)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield Server(container.get_connection_url())
        return
    from gateway.store.embedded import EmbeddedPostgres

    directory = tempfile.mkdtemp(prefix="mcpgw-test-")
    cluster = EmbeddedPostgres(directory, fast_unsafe=True)
    try:
        cluster.ensure_running()
    except Exception as exc:  # fail loudly, with the reason
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(
            "no PostgreSQL for the tests: set MCP_GATEWAY_TEST_DATABASE_URL, start Docker, or install "
            f"PostgreSQL server binaries (Debian: postgresql). Embedded launcher said: {exc}"
        ) from exc
    try:
        yield Server(cluster.url_for("postgres", "postgres"), embedded_dir=directory)
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class TestDatabase:
    """One migrated database for one test, with the URLs of its three kinds of login."""

    __test__ = False
    name: str
    urls: DatabaseUrls
    server: Server

    @property
    def admin_url(self) -> str:
        return self.urls.admin

    def env(self) -> dict[str, str]:
        """Environment for a gateway subprocess using this database."""
        return {
            "MCP_GATEWAY_DATABASE_URL": self.urls.admin,
            "MCP_GATEWAY_APP_DATABASE_URL": self.urls.app,
            "MCP_GATEWAY_CONSOLE_DATABASE_URL": self.urls.console,
        }


class DatabaseFactory:
    """Creates the template once, then clones it per test."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.prefix = f"mcpgw_{uuid.uuid4().hex[:8]}"
        self.template = f"{self.prefix}_template"
        self._counter = itertools.count()
        self.password = url_password(server.admin_url)
        with self._maintenance() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        migrate(self._db_url(self.template), login_password=self.password)

    def _db_url(self, name: str) -> str:
        return with_user(self.server.admin_url, _user(self.server.admin_url), dbname=name)

    def _maintenance(self) -> psycopg.Connection:
        return psycopg.connect(self.server.admin_url, autocommit=True)

    def urls_for(self, name: str) -> DatabaseUrls:
        admin = self._db_url(name)
        return DatabaseUrls(
            admin=admin,
            app=with_user(admin, APP_LOGIN, self.password),
            console=with_user(admin, CONSOLE_LOGIN, self.password),
            derived_logins=False,
            embedded=False,
        )

    def create(self) -> TestDatabase:
        name = f"{self.prefix}_{next(self._counter)}"
        with self._maintenance() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(self.template)))
        # A clone does not inherit database-level grants (they live in pg_database): re-run the
        # idempotent role/database migration so the clone is protected exactly like a migrated database.
        with psycopg.connect(self._db_url(name), autocommit=True) as conn:
            conn.execute(_ROLES_SQL)
        return TestDatabase(name=name, urls=self.urls_for(name), server=self.server)

    def drop(self, database: TestDatabase) -> None:
        with self._maintenance() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database.name)))

    def close(self) -> None:
        with self._maintenance() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.template)))


def _user(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(url).get("user") or os.environ.get("USER", "postgres"))
