"""Database-level privileges hold in every test database, as in a migrated one."""

from __future__ import annotations

import psycopg
import pytest

from tests.pg import TestDatabase


@pytest.mark.parametrize("login", ["app", "console"])
def test_logins_cannot_create_temporary_objects(database: TestDatabase, login: str) -> None:
    with psycopg.connect(getattr(database.urls, login), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # the console's default; SQL can undo it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TEMP TABLE scratch (x int)")
