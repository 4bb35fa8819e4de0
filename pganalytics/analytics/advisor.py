"""The index advisor: which index would serve a collected statement, checked with a what-if
plan where the server has hypopg.

Suggestions come from the statement's parse tree (pglast's JSON tree): single-table
predicates (`=`, `IN`, `= ANY`, ranges, `BETWEEN`, `IS NULL`) and ORDER BY, with the
selectivity of each column estimated from the server's `pg_stats`. Equality columns come
first, most selective first, a range column last; columns stop once few rows remain. Small
tables, unselective predicates and indexes that already lead with the columns get none, and
every statement without a suggestion says why.

The same rule as EXPLAIN (pganalytics.analytics.explain): nothing is read or planned with
more privilege than the role that ran the statement. `pg_stats` shows only the columns its
reader may SELECT, so it is read as that role, in a read-only transaction of a fixed
catalog query (no code of the role's can run there); the table is the one the role's own
plan scans (its verbose plan names the schema); the what-if plan is explain()'s, as the role,
with the hypothetical index made in the session first and reset after. Identifiers from the
statement reach the server only as parameters or quoted, never as SQL.
"""

import json
from dataclasses import dataclass, field, replace

import psycopg
from django.conf import settings
from django.core.cache import caches
from django.views.decorators.debug import sensitive_variables
from pglast import parser
from psycopg import sql as pgsql

from pganalytics import targets
from pganalytics.analytics import explain
from pganalytics.dsn import scrub
from pganalytics.fingerprint import fingerprint
from pganalytics.targets import MARKER

MIN_TABLE_ROWS = explain.LARGE_TABLE_ROWS  # smaller tables are read whole fast enough
FEW_ROWS = 100  # no further column once the estimate is down to this many rows
MAX_SELECTIVITY = 0.1  # predicates keeping a larger share of the table are left to a scan
RANGE_SELECTIVITY = 1 / 3  # PostgreSQL's own guesses for a range of unknown bounds
BETWEEN_SELECTIVITY = 0.005
ANY_ELEMENTS = 10  # `= ANY($1)`: an array of unknown length
DEFAULT_DISTINCT = 200  # PostgreSQL's guess when pg_stats has no n_distinct
RANGE_OPERATORS = {"<", ">", "<=", ">="}
FLIPPED = {"=": "=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
ADVISED = {"SelectStmt", "UpdateStmt", "DeleteStmt"}
JOINED = {"UpdateStmt": "fromClause", "DeleteStmt": "usingClause"}
# pglast's constants by kind, and the value it leaves out (a zero, an empty string, false)
CONSTANT_DEFAULTS = {"sval": "", "ival": 0, "fval": "0", "boolval": False}
SUGGESTED_INDEX = "the suggested index"

HYPOPG_SCHEMA = """SELECT n.nspname FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'hypopg'"""
TABLE_FACTS = MARKER + f""" SELECT c.reltuples, ({HYPOPG_SCHEMA}),
    EXISTS (SELECT FROM pg_catalog.pg_available_extensions WHERE name = 'hypopg'),
    pg_catalog.current_setting('is_superuser')::bool AND NOT pg_catalog.pg_is_in_recovery(),
    ARRAY(SELECT pg_catalog.json_build_object('name', i.relname, 'usable',
                 x.indisvalid AND x.indpred IS NULL AND am.amname = 'btree',
                 'columns', ARRAY(SELECT a.attname FROM pg_catalog.unnest(x.indkey::int2[])
                     WITH ORDINALITY AS k(attnum, position)
                     LEFT JOIN pg_catalog.pg_attribute a
                       ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                     WHERE k.position <= x.indnkeyatts ORDER BY k.position))::text
          FROM pg_catalog.pg_index x
          JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
          JOIN pg_catalog.pg_am am ON am.oid = i.relam
          WHERE x.indrelid = c.oid ORDER BY i.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s"""
# The column statistics, read as the statement's role: as pg_stat_statements records it under
# that role, after MARKER (the collector leaves it out, as explain.AS_OTHER_ROLES), and as sent.
STATS_READ = (
    " SELECT attname, null_frac, n_distinct, most_common_vals::text::text[], most_common_freqs"
    " FROM pg_catalog.pg_stats WHERE schemaname = $1 AND tablename = $2 AND NOT inherited"
)
AS_OTHER_ROLES = (STATS_READ,)
COLUMN_STATS = MARKER + STATS_READ.replace("$1", "%s").replace("$2", "%s")


class NoSuggestion(ValueError):
    """Why a statement gets no suggestion (shown to the user); `transient` when trying
    again later may give one (a timeout, a target that did not answer)."""

    def __init__(self, reason, transient=False):
        super().__init__(reason)
        self.reason = reason
        self.transient = transient

    def __reduce__(self):  # cached: pickled with both arguments
        return type(self), (self.reason, self.transient)


@dataclass(frozen=True)
class Predicate:
    column: str
    kind: str  # "equality", "range", "between" or "null"
    values: tuple = ()  # the literal values compared with (for the most common values)
    elements: int = 1  # values an IN list or `= ANY` matches


@dataclass(frozen=True)
class Shape:
    """What the advisor reads of a statement: its one table and how it is filtered, sorted."""

    alias: str  # the name the plan's scan of the table goes by
    predicates: tuple[Predicate, ...]
    order_by: tuple[str, ...]  # plain columns sorted all in one direction; else ()
    limited: bool


@dataclass(frozen=True)
class ColumnStats:
    null_frac: float
    n_distinct: float
    common_values: tuple = ()
    common_freqs: tuple = ()


@dataclass(frozen=True)
class TableFacts:
    rows: float  # pg_class.reltuples; -1: never analysed
    indexes: tuple  # (name, key columns (None for an expression), usable for lookups)
    stats: dict  # column -> ColumnStats the role may read
    hypopg_schema: str | None
    unverified_reason: str  # why a what-if plan cannot be made, when it cannot


@dataclass(frozen=True)
class Suggestion:
    schema: str
    table: str
    columns: tuple[str, ...]
    statement: str  # the CREATE INDEX CONCURRENTLY to run, names quoted
    estimated_rows: float  # rows left to read through the index, from pg_stats
    verified: bool
    cost_before: float | None  # the generic plan's total cost, without and with the index
    cost_after: float | None
    plan_before: tuple[str, ...] = ()  # the plans' nodes, top first
    plan_after: tuple[str, ...] = ()
    note: str = ""  # why it is unverified
    whatif_plan: list | None = field(default=None, repr=False)  # EXPLAIN (FORMAT JSON)


@dataclass(frozen=True)
class Advice:
    suggestions: tuple[Suggestion, ...]
    reason: str | None  # why there is none
    transient: bool = False  # a step failed in a way that may pass: kept briefly


def read_shape(sql):
    """The Shape of `sql`, or NoSuggestion saying why it is not advised."""
    try:
        tree = explain.parse_tree(sql)
    except parser.ParseError as error:
        raise NoSuggestion(f"the statement does not parse: {error}") from None
    statements = tree.get("stmts", [])
    if len(statements) != 1:
        raise NoSuggestion(f"expected one statement, found {len(statements)}")
    kind, body = next(iter(statements[0]["stmt"].items()))
    if kind not in ADVISED:
        raise NoSuggestion(f"only SELECT, UPDATE and DELETE are advised, not {kind}")
    if body.get("withClause"):
        raise NoSuggestion("WITH queries are not handled yet")
    if body.get("op", "SETOP_NONE") != "SETOP_NONE":
        raise NoSuggestion("UNION, INTERSECT and EXCEPT are not handled yet")
    relation = _relation(kind, body)
    alias = (relation.get("alias") or {}).get("aliasname") or relation["relname"]
    names = {alias, relation["relname"]}
    conditions = _conjuncts(body.get("whereClause"))
    predicates = tuple(
        found for condition in conditions
        if (found := _predicate(condition, names)) is not None
    )
    order_by = _order_columns(body.get("sortClause", []), names)
    limited = "limitCount" in body
    if not predicates and not (order_by and limited):
        if any(condition.get("BoolExpr", {}).get("boolop") == "OR_EXPR"
               for condition in conditions):
            raise NoSuggestion("conditions joined by OR are not handled yet")
        raise NoSuggestion("no predicate on a table column")
    return Shape(alias, predicates, order_by, limited)


def _relation(kind, body):
    """The one RangeVar a statement reads, or NoSuggestion."""
    if kind == "SelectStmt":
        items = body.get("fromClause", [])
        if not items:
            raise NoSuggestion("no table to index")
        if len(items) > 1 or "JoinExpr" in items[0]:
            raise NoSuggestion("joins are not handled yet")
        if "RangeVar" not in items[0]:
            raise NoSuggestion("subqueries and functions in FROM are not handled yet")
        return items[0]["RangeVar"]
    if body.get(JOINED[kind]):
        raise NoSuggestion("joins are not handled yet")
    return body["relation"]


def _conjuncts(condition):
    """The AND-ed conditions of a WHERE clause (an OR or NOT is one condition)."""
    pending, found = [condition] if condition else [], []
    while pending:
        node = pending.pop()
        boolean = node.get("BoolExpr")
        if boolean and boolean["boolop"] == "AND_EXPR":
            pending.extend(reversed(boolean["args"]))
        else:
            found.append(node)
    return found


def _column(node, names):
    """The column a ColumnRef names in the statement's table, else None."""
    fields = node.get("ColumnRef", {}).get("fields", [])
    words = [part["String"]["sval"] for part in fields if "String" in part]
    if not words or len(words) != len(fields) or len(words) > 3:
        return None
    if len(words) > 1 and words[-2] not in names:
        return None
    return words[-1]


def _is_value(node):
    """True for an expression that names no column (a constant, a parameter, now(), ...)."""
    return not any(kind in ("ColumnRef", "SubLink") for kind, _ in explain.tree_nodes([node]))


def _literal(node):
    """The constant's text as pg_stats prints its values, else None (parameters, calls)."""
    if "TypeCast" in node:
        node = node["TypeCast"]["arg"]
    constant = node.get("A_Const")
    if not constant or constant.get("isnull"):
        return None
    for kind, default in CONSTANT_DEFAULTS.items():
        if kind in constant:
            value = constant[kind].get(kind, default)
            return ("true" if value else "false") if kind == "boolval" else str(value)
    return None


def _predicate(node, names):
    """The Predicate of one condition on a column of the table against values, else None."""
    if "NullTest" in node:
        test = node["NullTest"]
        column = _column(test["arg"], names)
        return Predicate(column, "null") if column and test["nulltesttype"] == "IS_NULL" else None
    expression = node.get("A_Expr")
    if not expression:
        return None
    operator = expression["name"][-1].get("String", {}).get("sval")
    left, right = expression.get("lexpr", {}), expression.get("rexpr", {})
    kind = expression["kind"]
    if kind == "AEXPR_OP" and operator in FLIPPED and _column(right, names) and _is_value(left):
        left, right, operator = right, left, FLIPPED[operator]
    column = _column(left, names)
    if column is None or not _is_value(right):
        return None
    if kind == "AEXPR_OP" and operator == "=":
        return Predicate(column, "equality", (_literal(right),))
    if kind == "AEXPR_OP" and operator in RANGE_OPERATORS:
        return Predicate(column, "range")
    if kind == "AEXPR_IN" and operator == "=":
        items = right.get("List", {}).get("items", [])
        return Predicate(column, "equality", tuple(map(_literal, items)), max(len(items), 1))
    if kind == "AEXPR_OP_ANY" and operator == "=":
        return Predicate(column, "equality", (), ANY_ELEMENTS)
    if kind == "AEXPR_BETWEEN":
        return Predicate(column, "between")
    return None


def _order_columns(sort_clause, names):
    """The ORDER BY's columns when all are plain columns of the table in one direction."""
    columns = [_column(item["SortBy"]["node"], names) for item in sort_clause]
    directions = {item["SortBy"]["sortby_dir"] for item in sort_clause}
    if not columns or None in columns or len(directions) > 1:
        return ()
    return tuple(dict.fromkeys(columns))


def selectivity(predicate, stats, table_rows):
    """The share of the table's rows `predicate` keeps, from the column's pg_stats."""
    if predicate.kind == "null":
        return stats.null_frac
    if predicate.kind == "range":
        return RANGE_SELECTIVITY
    if predicate.kind == "between":
        return BETWEEN_SELECTIVITY
    distinct = stats.n_distinct if stats.n_distinct > 0 else -stats.n_distinct * table_rows
    distinct = distinct or DEFAULT_DISTINCT
    common = dict(zip(stats.common_values, stats.common_freqs))
    others = max(1.0 - stats.null_frac - sum(stats.common_freqs), 0.0)
    per_other = others / max(distinct - len(common), 1.0)
    values = predicate.values or (None,) * predicate.elements
    total = sum(common.get(value, per_other) if value is not None else
                (1.0 - stats.null_frac) / distinct for value in values)
    return min(total, 1.0)


def choose_columns(shape, facts):
    """(columns, estimated rows left) of the index to suggest, or NoSuggestion saying why."""
    rows = facts.rows
    if rows < 0:
        raise NoSuggestion("the table has not been analysed yet (run ANALYZE on it)")
    if rows < MIN_TABLE_ROWS:
        raise NoSuggestion(f"the table is too small to need an index ({rows:,.0f} rows)")
    best = {}
    missing = []
    for predicate in shape.predicates:
        stats = facts.stats.get(predicate.column)
        if stats is None:
            missing.append(predicate.column)
            continue
        share = selectivity(predicate, stats, rows)
        ranged = predicate.kind in ("range", "between")
        if predicate.column not in best or share < best[predicate.column][1]:
            best[predicate.column] = (ranged, share)
    if missing and not best and not shape.order_by:
        raise NoSuggestion(
            "no column statistics the role may read for "
            + ", ".join(sorted(set(missing))) + " (run ANALYZE on the table)"
        )
    equal = sorted((share, column) for column, (ranged, share) in best.items() if not ranged)
    ranges = sorted((share, column) for column, (ranged, share) in best.items() if ranged)
    columns, left = [], rows
    for share, column in equal:
        if left <= FEW_ROWS:
            break
        columns.append(column)
        left *= share
    if ranges and left > FEW_ROWS:
        share, column = ranges[0]
        columns.append(column)
        left *= share
    # A LIMIT read in the ORDER BY's order stops early: an index can serve that order
    # after the equality columns, not after a range.
    serves_order = bool(shape.order_by and shape.limited and left > FEW_ROWS
                        and not (ranges and ranges[0][1] in columns))
    if serves_order:
        columns += [column for column in shape.order_by if column not in columns]
    if not columns:
        raise NoSuggestion("no predicate on a table column")
    if left / rows > MAX_SELECTIVITY and not serves_order:
        raise NoSuggestion(
            f"no selective predicate: they keep about {left / rows:.0%} of the table's rows, "
            "which a scan reads as fast"
        )
    return tuple(columns), max(left, 1.0)


def covering_index(columns, indexes):
    """The name of a usable index whose leading columns are `columns`, else None."""
    for name, keys, usable in indexes:
        leading = keys[: len(columns)]
        if usable and len(leading) == len(columns) and set(leading) == set(columns):
            return name
    return None


def quoted(*names):
    """`names` as a quoted, dotted SQL name: whatever a target named its objects stays a name."""
    return ".".join(pgsql.Identifier(name).as_string() for name in names)


def index_definition(schema, table, columns, *, concurrently):
    """The CREATE INDEX of `columns` of `schema.table`, every name quoted; unnamed: the server
    names it after the table and columns."""
    keyword = "CREATE INDEX CONCURRENTLY" if concurrently else "CREATE INDEX"
    listed = ", ".join(quoted(column) for column in columns)
    return f"{keyword} ON {quoted(schema, table)} ({listed})"


def plan_shape(plan_json, hypothetical_index=""):
    """The plan's nodes as `Seq Scan on orders`, `Index Scan using orders_pkey on orders`, the
    hypothetical index named SUGGESTED_INDEX; top first."""
    shape = []
    for node in explain.plan_nodes(plan_json):
        words = [node["Node Type"]]
        index = node.get("Index Name")
        if index:
            words.append(f"using {SUGGESTED_INDEX if index == hypothetical_index else index}")
        if node.get("Relation Name"):
            words.append(f"on {node['Relation Name']}")
        shape.append(" ".join(words))
    return tuple(shape)


def scanned_table(plan_json, alias):
    """(schema, table) the plan reads under `alias` (the role's own resolution of its name)."""
    for node in explain.plan_nodes(plan_json):
        if node.get("Alias") == alias and "Relation Name" in node and "Schema" in node:
            return node["Schema"], node["Relation Name"]
    raise NoSuggestion(
        f"the plan reads no table as {quoted(alias)} (a view or a partitioned table):"
        " not handled yet"
    )


@sensitive_variables()  # all: psycopg's frames below hold the password under other names
def table_facts(dsn, *, userid, schema, table, timeout=None):
    """TableFacts of `schema.table` on the server at `dsn`; its column statistics as the role
    `userid` may read them. Raises NoSuggestion (a refusal, or a failure)."""
    seconds = settings.EXPLAIN_STATEMENT_TIMEOUT if timeout is None else timeout
    try:
        connection = targets.connect(
            dsn, options=f"-c statement_timeout={int(seconds * 1000)}", autocommit=True
        )
        with targets.deadline(connection, seconds + explain.DEADLINE_MARGIN_SECONDS):
            try:
                facts = _read_facts(connection, userid, schema, table)
            finally:
                if connection.info.transaction_status in explain.OPEN_TRANSACTION:
                    connection.execute(MARKER + " ROLLBACK")
            if facts.hypopg_schema is None and not facts.unverified_reason:
                facts = _create_hypopg(connection, facts)
    except explain.ExplainRefused as refused:
        raise NoSuggestion(f"refused: {refused.reason}") from None
    except psycopg.Error as error:
        message = scrub(explain.error_message(error), dsn)
        raise NoSuggestion(f"failed: {message}", explain.is_transient(error)) from None
    return facts


def _read_facts(connection, userid, schema, table):
    """TableFacts read in one read-only transaction the caller rolls back: the catalogs as
    the session's role, then pg_stats as the statement's role."""
    with connection.cursor(binary=True) as cursor:
        cursor.execute(MARKER + " BEGIN")
        cursor.execute(MARKER + " SET TRANSACTION READ ONLY")
        role = explain.statement_role(cursor, userid)
        found = cursor.execute(TABLE_FACTS, [schema, table]).fetchone()
        if found is None:
            raise NoSuggestion(f"{quoted(schema, table)} no longer exists")
        rows, hypopg_schema, available, may_create, indexes = found
        if not role.own:
            cursor.execute(
                pgsql.SQL(MARKER + " SET LOCAL ROLE {}").format(pgsql.Identifier(role.name))
            )
        stats = {
            name: ColumnStats(null_frac or 0.0, n_distinct or 0.0, tuple(values or ()),
                              tuple(freqs or ()))
            for name, null_frac, n_distinct, values, freqs in cursor.execute(
                COLUMN_STATS, [schema, table]
            )
        }
    return TableFacts(
        rows=float(rows),
        indexes=tuple(_index(text) for text in indexes),
        stats=stats,
        hypopg_schema=hypopg_schema,
        unverified_reason=_unverified_reason(hypopg_schema, available, may_create),
    )


def _index(text):
    """(name, key columns, usable) of one index as TABLE_FACTS gives it (JSON)."""
    index = json.loads(text)
    return index["name"], tuple(index["columns"]), index["usable"]


def _unverified_reason(hypopg_schema, available, may_create):
    """Why no what-if plan can be made, or "" when it can (hypopg is there, or may be made)."""
    if hypopg_schema is not None:
        return ""
    if not available:
        return "hypopg is not installed on the server"
    if not settings.ADVISOR_CREATE_HYPOPG:
        return "hypopg is not created in this database (CREATE EXTENSION hypopg)"
    if not may_create:
        return (
            "hypopg is not created in this database and the monitoring role may not create "
            "it (a superuser may: CREATE EXTENSION hypopg)"
        )
    return ""


def _create_hypopg(connection, facts):
    """`facts` with hypopg created in the database (schema public), or why it could not be."""
    try:
        connection.execute(MARKER + " CREATE EXTENSION IF NOT EXISTS hypopg SCHEMA public")
    except psycopg.Error as error:
        if not explain.is_transient(error):
            reason = f"hypopg could not be created: {explain.error_message(error)}"
            return replace(facts, unverified_reason=reason)
        raise
    schema = connection.execute(f"{MARKER} {HYPOPG_SCHEMA}").fetchone()[0]
    return replace(facts, hypopg_schema=schema)


@sensitive_variables("dsn")
def advise(database_id, dsn, sql, *, userid, version=None):
    """The Advice for `sql` on its server (same caller rule as explain.explain: a statement
    collected there, with its role). Plans come through the `explain` cache."""
    try:
        shape = read_shape(sql)
        try:
            before = explain.cached_explain(database_id, dsn, sql, userid=userid, version=version)
        except explain.ExplainRefused as refused:
            raise NoSuggestion(f"refused: {refused.reason}") from None
        except explain.ExplainFailed as failed:
            raise NoSuggestion(f"failed: {failed}", failed.transient) from None
        schema, table = scanned_table(before.plan_json, shape.alias)
        facts = table_facts(dsn, userid=userid, schema=schema, table=table)
        columns, rows = choose_columns(shape, facts)
        covering = covering_index(columns, facts.indexes)
        if covering:
            raise NoSuggestion(f"already served by index {quoted(covering)}")
        suggestion = Suggestion(
            schema=schema,
            table=table,
            columns=columns,
            statement=index_definition(schema, table, columns, concurrently=True),
            estimated_rows=rows,
            verified=False,
            cost_before=None,
            cost_after=None,
            plan_before=plan_shape(before.plan_json),
            note=facts.unverified_reason,
        )
        if facts.hypopg_schema is None:
            return Advice((suggestion,), None)
        return _checked(database_id, dsn, sql, userid, version, before, suggestion, facts)
    except NoSuggestion as none:
        return Advice((), none.reason, none.transient)


def _checked(database_id, dsn, sql, userid, version, before, suggestion, facts):
    """The Advice once the what-if plan has judged `suggestion`."""
    hypothetical = explain.Hypothetical(
        facts.hypopg_schema,
        index_definition(suggestion.schema, suggestion.table, suggestion.columns,
                         concurrently=False),
    )
    try:
        after = explain.cached_explain(
            database_id, dsn, sql, userid=userid, version=version, hypothetical=hypothetical
        )
    except (explain.ExplainRefused, explain.ExplainFailed) as error:
        note = f"the what-if plan failed: {error}"
        transient = getattr(error, "transient", False)
        return Advice((replace(suggestion, note=note),), None, transient)
    used = any(
        node.get("Index Name") == after.hypothetical_index
        for node in explain.plan_nodes(after.plan_json)
    )
    if not used or after.summary.total_cost >= before.summary.total_cost:
        raise NoSuggestion(
            f"checked with hypopg: the planner would not use an index on "
            f"{', '.join(map(quoted, suggestion.columns))} "
            f"(cost {before.summary.total_cost:,.2f} either way)"
        )
    return Advice((replace(
        suggestion,
        verified=True,
        cost_before=before.summary.total_cost,
        cost_after=after.summary.total_cost,
        plan_after=plan_shape(after.plan_json, after.hypothetical_index),
        note="",
        whatif_plan=after.plan_json,
    ),), None)


@sensitive_variables("dsn")
def advice_key(database_id, dsn, sql):
    """The `advisor` cache key: `advice:{database_id}:{server}:{fingerprint}`."""
    return f"advice:{database_id}:{explain.server_digest(dsn)}:{fingerprint(sql).fingerprint}"


@sensitive_variables("dsn")
def cached_advice(database_id, dsn, sql, *, userid, version=None):
    """advise() through the `advisor` cache under `version` (the database's data version);
    an Advice that met a transient failure is kept explain.TRANSIENT_FAILURE_SECONDS only."""
    key = advice_key(database_id, dsn, sql)
    cache = caches["advisor"]
    computed = []

    def outcome():
        computed.append(advise(database_id, dsn, sql, userid=userid, version=version))
        return computed[-1]

    found = cache.get_or_set(key, outcome, version=version)
    if found.transient and computed:
        cache.touch(key, explain.TRANSIENT_FAILURE_SECONDS, version=version)
    return found


def estimated_saving(suggestion, calls):
    """(cost before - cost after) x calls: the planner's cost units the index saves over
    `calls` runs; None when unverified."""
    if not suggestion.verified:
        return None
    return (suggestion.cost_before - suggestion.cost_after) * (calls or 0)
