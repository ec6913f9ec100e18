"""Catalog lint for schema gateway: the security invariants, checked in the catalogs.

Each check takes an admin connection and returns a list of problems (strings that
name the object). tests/db/test_catalog_lint.py fails the build on any problem and
proves each check catches the violation it is about.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg

OWNER = "mcp_gateway_owner"
REQUEST_ROLES = ("mcp_gateway_member", "mcp_gateway_tenant_admin", "mcp_gateway_auditor")
SYSTEM_ROLES = ("mcp_gateway_ingest", "mcp_gateway_authn", "mcp_gateway_oauth", "mcp_gateway_vault")
LOGIN_ROLES = ("mcp_gateway_app", "mcp_gateway_console")
ALL_ROLES = (OWNER, *REQUEST_ROLES, *SYSTEM_ROLES, *LOGIN_ROLES)
# Roles that may never hold a write privilege (INSERT/UPDATE/DELETE/TRUNCATE) on a
# gateway relation. The console may later get SELECT on reporting relations: fine.
READ_ONLY_ROLES = (*REQUEST_ROLES, *LOGIN_ROLES)
FENCED_ROLES = ("mcp_gateway_member", "mcp_gateway_tenant_admin")
IDENTITY_HELPERS = ("current_tenant_id", "current_user_id", "identity_is_set")

# SECURITY DEFINER functions allowed in schema gateway: "name(args)" -> reason.
# Each must also pin search_path (SET search_path = '').
SECURITY_DEFINER_ALLOWED: dict[str, str] = {
    "console_scope()": "verifies the admin console's HMAC-signed scope with a key the console login cannot "
                       "read (migrations/010_console_scope.sql); returns only the verified scope",
}

# Indexes on tenant tables that may lead with something other than tenant_id: name -> reason.
INDEX_NOT_LEADING_ALLOWED: dict[str, str] = {
    "mcp_sessions_open_key": "the analytics session key index; its key is replaced by a hash in its own migration",
}
CONSOLE_LOGIN = "mcp_gateway_console"
# DELETE grants besides the owner: (relation, role) -> reason. Each such table must also limit
# the role's DELETE policy to rows whose lifetime is over.
DELETE_ALLOWED: dict[tuple[str, str], str] = {
    ("gateway.oauth_pending", "mcp_gateway_oauth"): "expired pending authorization requests",
    ("gateway.oauth_codes", "mcp_gateway_oauth"): "authorization codes an hour past their expiry",
    ("gateway.oauth_assertion_jtis", "mcp_gateway_oauth"): "client assertion JWT IDs past their expiry",
}

Check = Callable[[psycopg.Connection], list[str]]


def _rows(conn: psycopg.Connection, sql: str, params: tuple = ()) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def check_rls_enabled_forced_and_policed(conn: psycopg.Connection) -> list[str]:
    """Every table: ENABLE + FORCE row level security and at least one policy."""
    problems = []
    for name, enabled, forced, policies in _rows(conn, """
        SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity,
               (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
          FROM pg_class c
         WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('r', 'p')
         ORDER BY 1"""):
        if not enabled:
            problems.append(f"{name}: row level security not ENABLEd")
        if not forced:
            problems.append(f"{name}: row level security not FORCEd")
        if not policies:
            problems.append(f"{name}: has no policies")
    return problems


def check_tenant_tables_are_fenced(conn: psycopg.Connection) -> list[str]:
    """Tables with tenant_id: a restrictive FOR ALL tenant fence for member and tenant_admin,
    and an index that leads with tenant_id."""
    problems = []
    for name, fenced, indexed in _rows(conn, """
        SELECT c.oid::regclass::text,
               EXISTS (SELECT 1 FROM pg_policy p
                        WHERE p.polrelid = c.oid AND NOT p.polpermissive AND p.polcmd = '*'
                          AND 'mcp_gateway_member'::regrole = ANY (p.polroles)
                          AND 'mcp_gateway_tenant_admin'::regrole = ANY (p.polroles)
                          AND pg_get_expr(p.polqual, p.polrelid)
                              ~ 'tenant_id = \\( SELECT gateway\\.current_tenant_id\\(\\)'
                          AND pg_get_expr(p.polwithcheck, p.polrelid)
                              ~ 'tenant_id = \\( SELECT gateway\\.current_tenant_id\\(\\)'),
               EXISTS (SELECT 1 FROM pg_index i
                        WHERE i.indrelid = c.oid
                          AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a
                                              WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'))
          FROM pg_class c
         WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('r', 'p')
           AND EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
         ORDER BY 1"""):
        if not fenced:
            problems.append(f"{name}: no RESTRICTIVE tenant fence (FOR ALL TO member, tenant_admin "
                            "USING/WITH CHECK tenant_id = (SELECT gateway.current_tenant_id()))")
        if not indexed:
            problems.append(f"{name}: no index leading with tenant_id")
    return problems


_HELPER_CALL = re.compile(r"gateway\.(" + "|".join(IDENTITY_HELPERS) + r")\(\)")


def check_tenant_indexes_lead_with_tenant_id(conn: psycopg.Connection) -> list[str]:
    """Every index and unique constraint on a table with tenant_id has tenant_id as its first key.

    An index scan touches every entry in its key range, whoever's row it is, before row-level
    security filters: with another first column the console could probe other tenants' keys
    through any counter. Allowed otherwise: indexes whose key columns the console login cannot
    read at all (no predicate can reach them), and the named exceptions above.
    """
    problems = []
    for table, index, leading, console_blind in _rows(conn, """
        SELECT c.oid::regclass::text, i.indexrelid::regclass::text,
               i.indkey[0] <> 0 AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a
                                                    WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'),
               i.indexprs IS NULL AND NOT EXISTS (
                   SELECT 1 FROM unnest(i.indkey::int2[]) k(attnum)
                    WHERE has_column_privilege(%s, c.oid, k.attnum, 'SELECT'))
          FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('r', 'p')
           AND EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
         ORDER BY 1, 2""", (CONSOLE_LOGIN,)):
        if leading or console_blind or index.removeprefix("gateway.") in INDEX_NOT_LEADING_ALLOWED:
            continue
        problems.append(f"{table}: index {index} does not lead with tenant_id (another tenant's keys "
                        "could be probed through it)")
    return problems


def check_policy_shape(conn: psycopg.Connection) -> list[str]:
    """Policies name roles (never PUBLIC); permissive ones name exactly one role; request
    roles get no write policies; identity is read only through (SELECT helper())."""
    problems = []
    for table, policy, permissive, cmd, roles, qual, check in _rows(conn, """
        SELECT p.polrelid::regclass::text, p.polname, p.polpermissive, p.polcmd,
               ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END FROM unnest(p.polroles) r),
               coalesce(pg_get_expr(p.polqual, p.polrelid), ''),
               coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
         WHERE c.relnamespace = 'gateway'::regnamespace
         ORDER BY 1, 2"""):
        where = f"{table} policy {policy}"
        if "public" in roles:
            problems.append(f"{where}: applies to PUBLIC (name the roles)")
        if permissive and len(roles) != 1:
            problems.append(f"{where}: a permissive policy must name exactly one role, not {roles}")
        if permissive and cmd != "r" and set(roles) & set(REQUEST_ROLES):
            problems.append(f"{where}: a write policy for a request role (nobody writes through the read path)")
        for expr in (qual, check):
            if "current_setting" in expr:
                problems.append(f"{where}: reads current_setting directly; use (SELECT gateway.current_...())")
            for match in _HELPER_CALL.finditer(expr):
                if not expr[:match.start()].endswith("SELECT "):
                    problems.append(f"{where}: {match.group(0)} not wrapped as (SELECT ...)")
    return problems


def check_views_are_security_invoker(conn: psycopg.Connection) -> list[str]:
    problems = []
    for name, kind, options in _rows(conn, """
        SELECT c.oid::regclass::text, c.relkind, coalesce(c.reloptions, '{}')
          FROM pg_class c
         WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('v', 'm')
         ORDER BY 1"""):
        if kind == "m":
            problems.append(f"{name}: materialized view (row level security does not apply to it)")
            continue
        opts = dict(o.split("=", 1) for o in options)
        if opts.get("security_invoker", "false").lower() not in ("true", "on", "1", "yes"):
            problems.append(f"{name}: view without security_invoker = true (runs with its owner's rights)")
    return problems


def check_role_attributes(conn: psycopg.Connection) -> list[str]:
    """No gateway role is superuser/bypassrls/createrole/createdb/replication; logins are
    NOINHERIT; only the two logins can log in; nobody is a member of the owner."""
    problems = []
    found = {r[0]: r for r in _rows(conn, """
        SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication, rolcanlogin, rolinherit
          FROM pg_roles WHERE rolname = ANY (%s)""", (list(ALL_ROLES),))}
    for role in ALL_ROLES:
        if role not in found:
            problems.append(f"role {role} is missing")
            continue
        _, superuser, bypass, createrole, createdb, replication, login, inherit = found[role]
        for flag, value in (("SUPERUSER", superuser), ("BYPASSRLS", bypass), ("CREATEROLE", createrole),
                            ("CREATEDB", createdb), ("REPLICATION", replication)):
            if value:
                problems.append(f"role {role} has {flag}")
        if role in LOGIN_ROLES and inherit:
            problems.append(f"role {role} is a login with INHERIT (it must hold nothing without SET ROLE)")
        if role not in LOGIN_ROLES and login:
            problems.append(f"role {role} can log in")
    for (role,) in _rows(conn, """
        SELECT r.rolname FROM pg_roles r
         WHERE r.rolname = ANY (%s) AND pg_has_role(r.oid, %s, 'MEMBER')""",
                         ([r for r in ALL_ROLES if r != OWNER], OWNER)):
        problems.append(f"role {role} is a member of {OWNER}")
    return problems


def check_relation_privileges(conn: psycopg.Connection) -> list[str]:
    """Nothing for PUBLIC; DELETE/TRUNCATE/REFERENCES/TRIGGER for nobody but the owner;
    no INSERT/UPDATE (table or column) for request roles and logins."""
    problems = []
    for name, column, grantee, privilege in _rows(conn, """
        SELECT c.oid::regclass::text, NULL::text, a.grantee, a.privilege_type
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.relnamespace = 'gateway'::regnamespace AND a.grantee <> c.relowner
        UNION ALL
        SELECT c.oid::regclass::text, att.attname::text, a.grantee, a.privilege_type
          FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid, aclexplode(att.attacl) a
         WHERE c.relnamespace = 'gateway'::regnamespace AND a.grantee <> c.relowner
         ORDER BY 1, 2, 3, 4"""):
        who = "PUBLIC" if grantee == 0 else conn.execute("SELECT %s::oid::regrole::text", (grantee,)).fetchone()[0]
        what = f"{name}{'.' + column if column else ''}: {privilege} granted to {who}"
        if grantee == 0:
            problems.append(what)
        elif privilege == "DELETE" and (name, who) in DELETE_ALLOWED and column is None:
            pass
        elif privilege in ("DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
            problems.append(what + " (only the owner may)")
        elif privilege in ("INSERT", "UPDATE") and who in READ_ONLY_ROLES:
            problems.append(what + " (read-only role)")
    # Effective privileges too (through memberships), for the read-only roles.
    for role, name in _rows(conn, """
        SELECT r, c.oid::regclass::text
          FROM unnest(%s::text[]) r, pg_class c
         WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND (has_table_privilege(r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                OR (c.relkind <> 'S' AND has_any_column_privilege(r, c.oid, 'INSERT, UPDATE')))
         ORDER BY 1, 2""", (list(READ_ONLY_ROLES),)):
        problems.append(f"{name}: {role} can write to it")
    return problems


def check_delete_policies_are_bounded(conn: psycopg.Connection) -> list[str]:
    """A role allowed to DELETE (DELETE_ALLOWED) may do so only through policies limited to rows
    whose lifetime is over (`expires_at < now()...`), never USING (true)."""
    problems = []
    for table, policy, role, qual in _rows(conn, """
        SELECT p.polrelid::regclass::text, p.polname, r::regrole::text,
               coalesce(pg_get_expr(p.polqual, p.polrelid), '')
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid, unnest(p.polroles) r
         WHERE c.relnamespace = 'gateway'::regnamespace AND p.polcmd IN ('d', '*') AND p.polpermissive
           AND r <> 0
         ORDER BY 1, 2"""):
        if (table, role) in DELETE_ALLOWED and not re.search(r"expires_at < \(?now\(\)", qual):
            problems.append(f"{table} policy {policy}: lets {role} delete rows that have not expired")
    return problems


# Columns holding secrets (or their digests): who may read them.
SECRET_COLUMNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("gateway.api_tokens", "token_hash"): ("mcp_gateway_authn",),
    ("gateway.oauth_clients", "secret_hash"): ("mcp_gateway_oauth",),
    ("gateway.oauth_codes", "code_hash"): ("mcp_gateway_oauth",),
    ("gateway.oauth_refresh_tokens", "token_hash"): ("mcp_gateway_oauth",),
    ("gateway.oauth_pending", "request_hash"): ("mcp_gateway_oauth",),
    ("gateway.oauth_pending", "csrf_hash"): ("mcp_gateway_oauth",),
    ("gateway.oauth_signing_keys", "private_pem"): ("mcp_gateway_oauth",),
}


def check_secret_columns(conn: psycopg.Connection) -> list[str]:
    """Only the named system role may SELECT a secret column (directly or through a membership)."""
    problems = []
    for (table, column), readers in SECRET_COLUMNS.items():
        for role in ALL_ROLES:
            if role == OWNER or role in readers:
                continue
            row = conn.execute("SELECT has_column_privilege(%s, %s::regclass, %s, 'SELECT')",
                               (role, table, column)).fetchone()
            can = row is not None and row[0]
            if can:
                problems.append(f"{table}.{column}: SELECT granted to {role} (a secret)")
    return problems


def check_functions(conn: psycopg.Connection) -> list[str]:
    """SECURITY INVOKER unless allow-listed (then search_path pinned); PUBLIC cannot execute."""
    problems = []
    for signature, definer, config, acl_public in _rows(conn, """
        SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}'),
               p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)
          FROM pg_proc p
         WHERE p.pronamespace = 'gateway'::regnamespace
         ORDER BY 1"""):
        short = signature.removeprefix("gateway.")
        if definer and short not in SECURITY_DEFINER_ALLOWED:
            problems.append(f"{signature}: SECURITY DEFINER and not on the allow-list")
        if definer and not any(c.startswith("search_path=") for c in config):
            problems.append(f"{signature}: SECURITY DEFINER without SET search_path")
        if acl_public:
            problems.append(f"{signature}: PUBLIC may execute it")
    return problems


def check_ownership(conn: psycopg.Connection) -> list[str]:
    """The schema and everything in it belongs to the owner role; nothing to a superuser."""
    problems = []
    for kind, name, owner, superuser in _rows(conn, """
        SELECT 'schema', n.nspname::text, r.rolname, r.rolsuper
          FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'gateway'
        UNION ALL
        SELECT 'relation', c.oid::regclass::text, r.rolname, r.rolsuper
          FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
         WHERE c.relnamespace = 'gateway'::regnamespace
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text, r.rolname, r.rolsuper
          FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
         WHERE p.pronamespace = 'gateway'::regnamespace
        UNION ALL
        SELECT 'type', t.oid::regtype::text, r.rolname, r.rolsuper
          FROM pg_type t JOIN pg_roles r ON r.oid = t.typowner
         WHERE t.typnamespace = 'gateway'::regnamespace
         ORDER BY 1, 2"""):
        if owner != OWNER:
            problems.append(f"{kind} {name} is owned by {owner}{' (a superuser)' if superuser else ''}, "
                            f"not {OWNER}")
    return problems


def check_money_is_numeric(conn: psycopg.Connection) -> list[str]:
    return [f"{name}.{column}: money as {typ} (use numeric)" for name, column, typ in _rows(conn, """
        SELECT c.oid::regclass::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = 'gateway'::regnamespace AND c.relkind IN ('r', 'p', 'v')
           AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname ~ '(cost|price|amount)'
           AND a.atttypid IN ('real'::regtype, 'double precision'::regtype, 'money'::regtype)
         ORDER BY 1, 2""")]


CHECKS: dict[str, Check] = {
    "rls_enabled_forced_and_policed": check_rls_enabled_forced_and_policed,
    "tenant_tables_are_fenced": check_tenant_tables_are_fenced,
    "tenant_indexes_lead_with_tenant_id": check_tenant_indexes_lead_with_tenant_id,
    "policy_shape": check_policy_shape,
    "views_are_security_invoker": check_views_are_security_invoker,
    "role_attributes": check_role_attributes,
    "relation_privileges": check_relation_privileges,
    "delete_policies_are_bounded": check_delete_policies_are_bounded,
    "secret_columns": check_secret_columns,
    "functions": check_functions,
    "ownership": check_ownership,
    "money_is_numeric": check_money_is_numeric,
}


def all_problems(conn: psycopg.Connection) -> list[str]:
    return [p for check in CHECKS.values() for p in check(conn)]
