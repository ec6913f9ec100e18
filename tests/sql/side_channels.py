"""A detector for counters that move with another tenant's rows, as the console login sees them.

Everything is enumerated from the catalog for the console login, nothing hand-listed:

- functions it may EXECUTE that take one oid/regclass and return a number (the statistics
  counters' shape), called for every relation and index in schema gateway;
- numeric columns it may SELECT of every pg_catalog table and view (summed per column).

A probe runs as tenant A's console (valid signed scope, seq scans switched off so index
scans are used, as an attacker would): a query on tenant B's key values, then the same
query on values nobody has. A counter whose movement differs between the two — in two
rounds, the same way — reacts to B's rows: a side channel.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from gateway.mcp.sqlconsole import sign_scope

CONSOLE = "mcp_gateway_console"
COUNT_TYPES = ("int2", "int4", "int8", "float4", "float8", "numeric")
NUMERIC_TYPES = ("int2", "int4", "int8", "float4", "float8", "numeric", "oid", "xid", "xid8", "pg_lsn")


@dataclass(frozen=True)
class Probe:
    table: str
    column: str
    present: str    # a value only tenant B has
    absent: str     # a value nobody has


def counter_functions(admin: psycopg.Connection) -> list[str]:
    return [r[0] for r in admin.execute("""
        SELECT p.oid::regprocedure::text
          FROM pg_proc p
         WHERE p.pronargs = 1 AND p.proargtypes[0] IN ('oid'::regtype, 'regclass'::regtype)
           AND p.prorettype = ANY (%s::regtype[]) AND NOT p.proretset AND p.prokind = 'f'
           AND has_function_privilege(%s, p.oid, 'EXECUTE')
         ORDER BY 1""", (list(NUMERIC_TYPES), CONSOLE)).fetchall()]


def counter_columns(admin: psycopg.Connection) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in admin.execute("""
        SELECT c.oid::regclass::text, a.attname::text
          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind IN ('r', 'v', 'm')
           AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = ANY (%s::regtype[])
           AND has_column_privilege(%s, c.oid, a.attnum, 'SELECT')
         ORDER BY 1, 2""", (list(COUNT_TYPES), CONSOLE)).fetchall()]


def gateway_relations(admin: psycopg.Connection) -> list[int]:
    return [r[0] for r in admin.execute(
        "SELECT oid::int FROM pg_class WHERE relnamespace = 'gateway'::regnamespace AND relkind IN ('r', 'i', 'p')"
        " ORDER BY relname").fetchall()]


def probes(admin: psycopg.Connection, tenant_b: str) -> list[Probe]:
    """Every indexed text/uuid column the console can read, with one of B's values in it."""
    found = []
    for table, column, typ in admin.execute("""
        SELECT DISTINCT c.oid::regclass::text, a.attname::text, format_type(a.atttypid, NULL)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey::int2[])
         WHERE c.relnamespace = 'gateway'::regnamespace AND a.atttypid IN ('text'::regtype, 'uuid'::regtype)
           AND has_column_privilege(%s, c.oid, a.attnum, 'SELECT')
           AND EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.oid AND t.attname = 'tenant_id')
         ORDER BY 1, 2""", (CONSOLE,)).fetchall():
        row = admin.execute(sql.SQL(
            "SELECT {c}::text FROM {t} WHERE tenant_id = %s AND {c} IS NOT NULL"
            " AND {c} NOT IN (SELECT {c} FROM {t} WHERE tenant_id <> %s AND {c} IS NOT NULL) LIMIT 1").format(
            c=sql.Identifier(column), t=sql.SQL(table)), (tenant_b, tenant_b)).fetchone()
        if row is None:
            continue
        absent = str(uuid.uuid4()) if typ == "uuid" else "zzzz-nobody-has-this"
        found.append(Probe(table, column, row[0], absent))
    return found


class Detector:
    def __init__(self, admin_url: str, console_url: str, tenant_a: str, tenant_b: str) -> None:
        self.admin_url = admin_url
        self.console_url = console_url
        self.tenant_a = tenant_a
        with psycopg.connect(admin_url, autocommit=True) as admin:
            self.key = admin.execute("SELECT key_id, key FROM mcp_gateway_private.console_keys"
                                     " ORDER BY key_id DESC LIMIT 1").fetchone()
            self.functions = counter_functions(admin)
            self.columns = counter_columns(admin)
            self.relations = gateway_relations(admin)
            self.probes = probes(admin, tenant_b)
        pairs = self._callable([(f, oid) for f in self.functions for oid in self.relations])
        calls = [f"{f.split('(')[0]}({oid}::oid)::text" for f, oid in pairs]
        sums = [sql.SQL("(SELECT sum({}::numeric)::text FROM {})").format(sql.Identifier(col), sql.SQL(rel)).as_string()
                for rel, col in self.columns]
        self.labels = [f"{f} on {oid}" for f, oid in pairs] + [f"{rel}.{col}" for rel, col in self.columns]
        self.snapshot_sql = "SELECT ARRAY[" + ", ".join(calls + sums or ["NULL"]) + "]::text[]"

    def _callable(self, pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The (function, relation) calls the console login can make without an error."""
        ok = []
        with psycopg.connect(self.console_url, autocommit=True) as conn:
            self._begin(conn)
            for function, oid in pairs:
                conn.execute("SAVEPOINT s")
                try:
                    conn.execute(f"SELECT {function.split('(')[0]}({oid}::oid)")
                    ok.append((function, oid))
                except psycopg.Error:
                    pass
                conn.execute("ROLLBACK TO SAVEPOINT s")
            conn.execute("ROLLBACK")
        return ok

    def _begin(self, conn: psycopg.Connection) -> None:
        conn.execute("BEGIN")
        pid, xid = conn.execute("SELECT pg_backend_pid(), pg_current_xact_id()::text").fetchone()  # type: ignore[misc]
        scope = sign_scope(self.key[1], self.key[0], tenant_id=self.tenant_a, pid=pid, xid=xid,
                           expiry=int(time.time()) + 120)
        conn.execute(sql.SQL("SET LOCAL mcp_gateway.console_scope = {}").format(sql.Literal(scope)))

    def _snapshot(self, conn: psycopg.Connection) -> list[str | None]:
        return list(conn.execute(self.snapshot_sql).fetchone()[0] or [])  # type: ignore[index]

    def _probe(self, conn: psycopg.Connection, probe: Probe, value: str) -> None:
        query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.SQL(probe.table),
                                                                        sql.Identifier(probe.column))
        conn.execute("SET LOCAL enable_seqscan = off")  # index scans, as an attacker would make them
        conn.execute("SET LOCAL enable_bitmapscan = off")
        rows = conn.execute(query, (value,)).fetchone()
        conn.execute("RESET enable_seqscan")
        conn.execute("RESET enable_bitmapscan")
        assert rows == (0,), f"tenant A's console saw B's row in {probe.table}"  # RLS itself holds

    def moving_counters(self) -> dict[str, str]:
        """Counter label -> which probe moved it differently for B's value than for nobody's."""
        found: dict[str, str] = {}
        with psycopg.connect(self.console_url, autocommit=True) as conn:
            for probe in self.probes:
                rounds = []
                for _ in range(2):
                    self._begin(conn)
                    self._snapshot(conn)  # warm the caches: the first snapshot is not like the others
                    s0 = self._snapshot(conn)
                    self._probe(conn, probe, probe.present)
                    s1 = self._snapshot(conn)
                    self._probe(conn, probe, probe.absent)
                    s2 = self._snapshot(conn)
                    conn.execute("ROLLBACK")
                    rounds.append({i for i in range(len(s0))
                                   if _delta(s0[i], s1[i]) != _delta(s1[i], s2[i])})
                for i in rounds[0] & rounds[1]:
                    found.setdefault(self.labels[i], f"{probe.table}.{probe.column}")
        return found


def _delta(before: str | None, after: str | None) -> float:
    if before is None or after is None:
        return 0.0 if before == after else float("nan")
    return _number(after) - _number(before)


def _number(text: str) -> float:
    if "/" in text:  # pg_lsn
        high, low = text.split("/")
        return float(int(high, 16) << 32 | int(low, 16))
    return float(text)
