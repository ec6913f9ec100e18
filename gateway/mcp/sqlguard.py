"""The admin SQL console's parser wall: exactly one SELECT built from allowed parts only.

An allow-list, not a deny-list. PostgreSQL's own grammar (pglast) parses the query and
every node of the tree must be a kind listed in ALLOWED_NODES; each way SQL can run a
function is then checked by name and schema:

- function calls (`f(x)`, also in FROM, ROWS FROM, aggregates with FILTER / WITHIN GROUP,
  window functions, and the SQL-standard forms the grammar turns into calls: EXTRACT,
  SUBSTRING, TRIM, AT TIME ZONE, ...): ALLOWED_FUNCTIONS (pg_catalog) or GATEWAY_FUNCTIONS;
- attribute notation (`x.f` is `f(x)` when x has no column f): a field name that is a
  function's name must be an allowed function;
- operators (each calls a function), also `OPERATOR(schema.op)`, `= ANY (...)`, `ORDER BY
  ... USING op`: built-in operators of ALLOWED_OPERATORS only;
- casts and column definitions (a cast calls a cast or input function): ALLOWED_TYPES,
  built-in types whose conversions have no side effects;
- COLLATE: pg_catalog collations; TABLESAMPLE: the built-in methods.

Anything else — another statement anywhere (data-modifying CTEs too), SELECT INTO,
FOR UPDATE/SHARE, parameters, a node kind not listed — is refused with a one-line reason.
The database is the second wall (migrations/012_console_side_channels.sql): what this
parser lets through can still only do what the console login may.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gateway.formatting import one_line
from gateway.mcp.sqlguard_names import FUNCTION_NAMES

MAX_SQL_LENGTH = 100_000
MAX_NODES = 200_000


class QueryRefused(Exception):
    """The parser refused the query; `str(exc)` says why in one line."""


_AGGREGATES = """
count sum avg min max array_agg string_agg json_agg jsonb_agg json_object_agg jsonb_object_agg bool_and
bool_or every stddev stddev_pop stddev_samp variance var_pop var_samp percentile_cont percentile_disc mode
corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy
regr_syy bit_and bit_or bit_xor range_agg range_intersect_agg xmlagg any_value
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
"""
_MATH = """
abs ceil ceiling floor round trunc sign sqrt cbrt power pow exp ln log log10 mod div pi degrees radians sin
cos tan asin acos atan atan2 sind cosd tand asind acosd atand atan2d sinh cosh tanh asinh acosh atanh cot
cotd width_bucket gcd lcm factorial scale min_scale trim_scale random num_nulls num_nonnulls
"""
_STRINGS = """
length char_length character_length octet_length bit_length lower upper initcap substr substring left right
lpad rpad ltrim rtrim btrim position strpos replace translate split_part concat concat_ws format repeat
reverse md5 sha224 sha256 sha384 sha512 encode decode to_hex ascii chr quote_ident quote_literal
quote_nullable regexp_match regexp_matches regexp_replace regexp_split_to_array regexp_split_to_table
regexp_count regexp_instr regexp_like regexp_substr starts_with string_to_array string_to_table
array_to_string normalize is_normalized unistr overlay similar_to_escape like_escape convert_from convert_to
to_ascii casefold get_byte get_bit bit_count
"""
_TIME = """
now clock_timestamp statement_timestamp transaction_timestamp timeofday date_trunc date_part extract
date_bin age make_date make_time make_timestamp make_timestamptz make_interval to_timestamp to_date to_char
to_number justify_days justify_hours justify_interval isfinite timezone overlaps
"""
_JSON = """
json_build_object json_build_array jsonb_build_object jsonb_build_array to_json to_jsonb json_object
jsonb_object row_to_json array_to_json json_array_length jsonb_array_length json_each jsonb_each
json_each_text jsonb_each_text json_extract_path jsonb_extract_path json_extract_path_text
jsonb_extract_path_text json_object_keys jsonb_object_keys json_array_elements jsonb_array_elements
json_array_elements_text jsonb_array_elements_text json_typeof jsonb_typeof jsonb_pretty jsonb_set
jsonb_set_lax jsonb_insert jsonb_strip_nulls json_strip_nulls jsonb_path_query jsonb_path_query_array
jsonb_path_query_first jsonb_path_exists jsonb_path_match jsonb_to_record jsonb_to_recordset json_to_record
json_to_recordset jsonb_concat
"""
_ARRAYS_RANGES = """
array_length array_lower array_upper array_dims array_ndims cardinality array_position array_positions
array_append array_prepend array_cat array_remove array_replace array_fill trim_array unnest
generate_series generate_subscripts isempty lower_inc upper_inc lower_inf upper_inf range_merge int4range
int8range numrange tsrange tstzrange daterange
"""
_MISC = """
coalesce nullif greatest least gen_random_uuid pg_typeof format_type current_database current_schema
current_schemas version to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery
ts_rank ts_rank_cd ts_headline numnode querytree setweight strip tsvector_to_array array_to_tsvector
xpath xpath_exists xmlexists xml_is_well_formed xml_is_well_formed_document xml_is_well_formed_content
xmlcomment xmlconcat host hostmask masklen netmask network family broadcast abbrev text int2 int4 int8
float4 float8 numeric bool date time timetz timestamp timestamptz interval uuid name varchar bpchar bytea
json jsonb pg_collation_for
"""

# pg_catalog functions console SQL may call (by name, every overload). None of them runs SQL
# given as text, sleeps, locks, signals, changes settings, touches files or counts other rows.
ALLOWED_FUNCTIONS = frozenset(" ".join((_AGGREGATES, _MATH, _STRINGS, _TIME, _JSON, _ARRAYS_RANGES,
                                        _MISC)).split())
# The reporting functions in schema gateway (SECURITY INVOKER; migrations/004_stats.sql).
GATEWAY_FUNCTIONS = frozenset({
    "get_disconnected_sessions", "get_disconnected_session_stats", "get_user_sessions",
    "get_user_activity_summary", "get_active_mcp_clients",
})

ALLOWED_OPERATORS = frozenset("""
+ - * / % ^ |/ ||/ @ & | # ~ << >> = <> != < > <= >= || ~~ !~~ ~~* !~~* !~ ~* !~* -> ->> #> #>> @> <@ ? ?| ?&
#- @? @@ && -|- &< &> <<| |>> &<| |&> <-> ## ^@ <^ >^ ?# ?- ?-| ?||
""".split()) | {"BETWEEN", "NOT BETWEEN", "BETWEEN SYMMETRIC", "NOT BETWEEN SYMMETRIC"}

ALLOWED_TYPES = frozenset("""
bool boolean int2 int4 int8 smallint integer int bigint float4 float8 real numeric decimal text varchar char
bpchar character name uuid json jsonb date time timetz timestamp timestamptz interval bytea inet cidr macaddr
macaddr8 oid xml tsvector tsquery int4range int8range numrange tsrange tstzrange daterange int4multirange
int8multirange nummultirange tsmultirange tstzmultirange datemultirange bit varbit money point line lseg box
path polygon circle regclass regtype regnamespace regrole record
""".split())

ALLOWED_SAMPLING = frozenset({"bernoulli", "system"})

# Relations: schemas gateway, pg_catalog and information_schema only (the database's
# privileges decide within them), and never the catalogs that count other tenants' rows or
# show other backends (also revoked in the database: migrations/012_console_side_channels.sql).
ALLOWED_SCHEMAS = frozenset({"gateway", "pg_catalog", "information_schema"})
DENIED_RELATION_PREFIXES = ("pg_stat", "pg_statio")
DENIED_RELATIONS = frozenset({"pg_locks", "pg_prepared_xacts", "pg_statistic", "pg_statistic_ext_data"})
# Columns that count every tenant's rows (pg_class); no gateway table has such a column.
DENIED_COLUMNS = frozenset({"reltuples", "relpages", "relallvisible"})

# Node kinds a read-only SELECT is made of. Anything else is refused by name.
ALLOWED_NODES = frozenset({
    "RawStmt", "SelectStmt", "ResTarget", "ColumnRef", "A_Star", "A_Const", "Integer", "Float", "Boolean",
    "String", "BitString", "A_Expr", "BoolExpr", "NullTest", "BooleanTest", "FuncCall", "NamedArgExpr",
    "TypeCast", "TypeName", "CollateClause", "SubLink", "CaseExpr", "CaseWhen", "CoalesceExpr",
    "MinMaxExpr", "RowExpr", "A_ArrayExpr", "A_Indirection", "A_Indices", "RangeVar", "RangeSubselect",
    "RangeFunction", "RangeTableSample", "RangeTableFunc", "RangeTableFuncCol", "JoinExpr", "Alias",
    "SortBy", "WindowDef", "WithClause", "CommonTableExpr", "CTESearchClause", "CTECycleClause",
    "GroupingSet", "GroupingFunc", "SQLValueFunction", "XmlExpr", "XmlSerialize", "ColumnDef",
})
_WRITE_STATEMENTS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


def _names(parts: Iterable[Any]) -> list[str]:
    return [getattr(p, "sval", "") or "" for p in parts or ()]


def _split(parts: Iterable[Any]) -> tuple[str | None, str, int]:
    names = _names(parts)
    if not names:
        return None, "", 0
    return (names[-2] if len(names) >= 2 else None), names[-1], len(names)


class SqlGuard:
    """Validates console SQL; `function_names` are the names attribute notation must not reach."""

    def __init__(self, function_names: Iterable[str] = ()) -> None:
        self.function_names = FUNCTION_NAMES | frozenset(n.lower() for n in function_names)
        # per validate() call (synchronous, so calls never interleave)
        self._star = False
        self._pg_class: set[str] = set()
        self._whole_rows: set[str] = set()

    def validate(self, sql: str) -> str:
        """Accept exactly one read-only SELECT made of allowed parts, else raise QueryRefused.

        Returns the statement's own text: without a trailing `;` or comments after it, so it
        can be embedded as a subquery.
        """
        from pglast import ast, parse_sql
        from pglast.parser import ParseError

        if not isinstance(sql, str) or not sql.strip():
            raise QueryRefused("the query is empty")
        if len(sql) > MAX_SQL_LENGTH:
            raise QueryRefused(f"the query is longer than {MAX_SQL_LENGTH} characters")
        if "\x00" in sql:
            raise QueryRefused("the query contains a NUL character")
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryRefused("the query is not valid UTF-8") from None
        try:
            statements = parse_sql(sql)
        except ParseError as exc:
            raise QueryRefused(f"syntax error: {one_line(str(exc)) or 'error'}") from None
        except RecursionError:
            raise QueryRefused("the query is nested too deeply") from None
        if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
            raise QueryRefused("only a single SELECT is allowed")
        stack: list[Any] = [statements[0].stmt]
        self._star = False
        self._pg_class = set()
        self._whole_rows = set()
        seen = 0
        while stack:
            node = stack.pop()
            seen += 1
            if seen > MAX_NODES:
                raise QueryRefused("the query is too complex")
            if node is None:
                continue
            if isinstance(node, (list, tuple)):
                stack.extend(node)
                continue
            if not isinstance(node, ast.Node):
                raise QueryRefused(f"{type(node).__name__} is not allowed in the console")
            self._check(node)
            stack.extend(_children(node))
        if self._pg_class and (self._star or self._pg_class & self._whole_rows):
            raise QueryRefused("pg_class's whole row is not allowed (name its columns; not reltuples/relpages)")
        raw = sql.encode("utf-8")
        start = statements[0].stmt_location or 0
        length = statements[0].stmt_len or len(raw) - start
        return raw[start:start + length].decode("utf-8").strip()

    def _check(self, node: Any) -> None:
        kind = type(node).__name__
        if kind in _WRITE_STATEMENTS:
            raise QueryRefused("data-modifying statements are not allowed")
        if kind.endswith("Stmt") and kind != "SelectStmt":
            raise QueryRefused("only a single SELECT is allowed")
        if kind == "LockingClause":
            raise QueryRefused("FOR UPDATE/SHARE is not allowed")
        if kind == "IntoClause":
            raise QueryRefused("SELECT INTO is not allowed")
        if kind == "ParamRef":
            raise QueryRefused("parameters ($1) are not allowed")
        if kind not in ALLOWED_NODES:
            raise QueryRefused(f"{_syntax_name(kind)} is not allowed in the console")
        check = getattr(self, f"_check_{kind}", None)
        if check is not None:
            check(node)

    # -- the ways SQL calls a function ---------------------------------------------------

    def _function(self, parts: Iterable[Any], how: str = "") -> None:
        schema, name, count = _split(parts)
        lowered = name.lower()
        if count > 2:
            allowed = False
        elif schema is None:
            allowed = lowered in ALLOWED_FUNCTIONS or lowered in GATEWAY_FUNCTIONS
        elif schema.lower() == "pg_catalog":
            allowed = lowered in ALLOWED_FUNCTIONS
        elif schema.lower() == "gateway":
            allowed = lowered in GATEWAY_FUNCTIONS
        else:
            allowed = False
        if not allowed:
            raise QueryRefused(f"function {_shown(schema, lowered)} is not allowed{how}")

    def _check_SelectStmt(self, node: Any) -> None:
        if node.intoClause is not None:
            raise QueryRefused("SELECT INTO is not allowed")
        if node.lockingClause:
            raise QueryRefused("FOR UPDATE/SHARE is not allowed")

    def _check_FuncCall(self, node: Any) -> None:
        self._function(node.funcname)

    def _field(self, name: str) -> None:
        # `x.name` is name(x) when x has no column of that name: a function name must be allowed.
        lowered = name.lower()
        if lowered in self.function_names and lowered not in ALLOWED_FUNCTIONS \
                and lowered not in GATEWAY_FUNCTIONS:
            raise QueryRefused(f"function {lowered} is not allowed (attribute notation .{lowered} calls it)")

    def _check_ColumnRef(self, node: Any) -> None:
        fields: tuple[Any, ...] = tuple(node.fields or ())
        for part in fields[1:]:
            if getattr(part, "sval", None) is not None:
                self._field(part.sval)
        last = getattr(fields[-1], "sval", None) if fields else None
        if last is not None and last.lower() in DENIED_COLUMNS:
            raise QueryRefused(f"column {last.lower()} is not allowed (it counts every tenant's rows)")
        if fields and type(fields[-1]).__name__ == "A_Star":
            self._star = True
        if len(fields) == 1 and getattr(fields[0], "sval", None) is not None:
            self._whole_rows.add(fields[0].sval.lower())  # `c` may be a whole row of relation c

    def _check_RangeVar(self, node: Any) -> None:
        schema = (node.schemaname or "").lower() or None
        name = (node.relname or "").lower()
        if node.catalogname or (schema is not None and schema not in ALLOWED_SCHEMAS):
            raise QueryRefused(f"relation {schema}.{name} is not allowed (schemas: gateway, pg_catalog, "
                               "information_schema)")
        if schema in (None, "pg_catalog") and (name.startswith(DENIED_RELATION_PREFIXES) or name in DENIED_RELATIONS):
            raise QueryRefused(f"relation {name} is not allowed (it shows other tenants' activity)")
        if schema in (None, "pg_catalog") and name == "pg_class":
            self._pg_class.add((node.alias.aliasname if node.alias else name).lower())

    def _check_A_Indirection(self, node: Any) -> None:
        for part in node.indirection or ():
            if getattr(part, "sval", None) is not None:
                self._field(part.sval)

    def _operator(self, parts: Iterable[Any]) -> None:
        schema, name, count = _split(parts)
        if count > 2 or (schema is not None and schema.lower() != "pg_catalog") or name not in ALLOWED_OPERATORS:
            raise QueryRefused(f"operator {_shown(schema, name)} is not allowed")

    def _check_A_Expr(self, node: Any) -> None:
        self._operator(node.name)

    def _check_SubLink(self, node: Any) -> None:
        if node.operName:
            self._operator(node.operName)

    def _check_SortBy(self, node: Any) -> None:
        if node.useOp:
            self._operator(node.useOp)

    def _check_TypeName(self, node: Any) -> None:
        schema, name, count = _split(node.names)
        if node.pct_type or node.setof or count > 2 or (schema is not None and schema.lower() != "pg_catalog") \
                or name.lower() not in ALLOWED_TYPES:
            raise QueryRefused(f"type {_shown(schema, name)} is not allowed")

    def _check_CollateClause(self, node: Any) -> None:
        schema, name, count = _split(node.collname)
        if count > 2 or (schema is not None and schema.lower() != "pg_catalog"):
            raise QueryRefused(f"collation {_shown(schema, name)} is not allowed")

    def _check_RangeTableSample(self, node: Any) -> None:
        schema, name, count = _split(node.method)
        if count > 2 or (schema is not None and schema.lower() != "pg_catalog") \
                or name.lower() not in ALLOWED_SAMPLING:
            raise QueryRefused(f"TABLESAMPLE method {_shown(schema, name)} is not allowed")

    def _check_CommonTableExpr(self, node: Any) -> None:
        if type(node.ctequery).__name__ in _WRITE_STATEMENTS:
            raise QueryRefused("data-modifying statements are not allowed")

    def _check_ColumnDef(self, node: Any) -> None:
        if node.constraints or node.raw_default is not None or node.cooked_default is not None:
            raise QueryRefused("column constraints and defaults are not allowed")


def _shown(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema and schema.lower() != "pg_catalog" else name


def _syntax_name(kind: str) -> str:
    return {"ParamRef": "a parameter", "JsonTable": "JSON_TABLE"}.get(kind, kind)


def _children(node: Any) -> Iterator[Any]:
    from pglast import ast

    if isinstance(node, ast.Node):
        for attr in getattr(node, "__slots__", ()):
            value = getattr(node, attr, None)
            if isinstance(value, (list, tuple, ast.Node)):
                yield value


_DEFAULT = SqlGuard()


def validate_sql(sql: str) -> str:
    """The guard with the built-in function names (no database needed)."""
    return _DEFAULT.validate(sql)
