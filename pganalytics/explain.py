"""Safe EXPLAIN of a collected statement on the monitored server it came from.

Safe means the statement is planned, never run: only plain `EXPLAIN (FORMAT JSON)` (never
ANALYZE), of a single SELECT / VALUES / WITH / INSERT / UPDATE / DELETE, inside a READ ONLY
transaction that is always rolled back, with a short statement_timeout so a slow planner
or a lock wait cannot hold a connection of the monitored server. Read-only matters even
without ANALYZE: planning may fold an IMMUTABLE function call, and if that function lies
about its side effects the transaction refuses them.

Statements collected by pg_stat_statements carry `$n` parameters; they get a generic plan
(PREPARE + `plan_cache_mode = force_generic_plan`; `EXPLAIN (GENERIC_PLAN)` of PostgreSQL 16+
cannot be used: over the extended protocol its `$n` become protocol parameters).

The text is checked with pglast, and the server must read it the same way: the transaction
first sets `standard_conforming_strings = on` (pglast's reading of a backslash in a quoted
string; `off` on the database or role would let the server split the text elsewhere), and
every statement goes through the extended query protocol, where the server refuses a text
of more than one statement.
"""

import json
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from django.core.cache import caches
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_variables
from pglast import parser

from pganalytics import targets
from pganalytics.dsn import scrub
from pganalytics.fingerprint import fingerprint

EXPLAINABLE = {"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"}
PREPARED_NAME = "pganalytics_explain"
LARGE_TABLE_ROWS = 10_000


class ExplainRefused(ValueError):
    """The statement is not one we may EXPLAIN; `reason` says why (shown to the user)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class ExplainFailed(RuntimeError):
    """The server could not plan the statement (unknown parameter type, timeout, ...)."""


@dataclass(frozen=True)
class ParsedStatement:
    """The one explainable statement of a text: its exact text and highest `$n`."""

    text: str
    parameter_count: int


@dataclass(frozen=True)
class SeqScan:
    relation: str
    estimated_rows: float
    table_rows: float | None  # pg_class.reltuples when known (the table, not the output)
    large: bool


@dataclass(frozen=True)
class PlanSummary:
    top_node: str
    total_cost: float
    estimated_rows: float
    node_types: dict[str, int]
    seq_scans: list[SeqScan] = field(default_factory=list)

    @property
    def large_seq_scans(self):
        return [scan for scan in self.seq_scans if scan.large]


@dataclass(frozen=True)
class PlanResult:
    plan_json: list
    summary: PlanSummary
    generic: bool


def parse_statement(sql):
    """The ParsedStatement of `sql`, or ExplainRefused saying why it may not be explained."""
    try:
        tree = parse_tree(sql)
    except parser.ParseError as error:
        raise ExplainRefused(f"the statement does not parse: {error}") from None
    statements = tree.get("stmts", [])
    if len(statements) != 1:
        raise ExplainRefused(f"expected one statement, found {len(statements)}")
    raw = statements[0]
    kind, body = next(iter(raw["stmt"].items()))
    encoded = sql.encode()
    start = raw.get("stmt_location", 0)
    end = start + raw["stmt_len"] if raw.get("stmt_len") else len(encoded)
    text = encoded[start:end].decode().strip()
    if kind not in EXPLAINABLE:
        raise ExplainRefused(
            f"{text.split(None, 1)[0].upper()} is a utility or DDL statement ({kind}); only"
            " SELECT, VALUES, WITH, INSERT, UPDATE and DELETE are explained"
        )
    if body.get("intoClause"):
        raise ExplainRefused("SELECT INTO creates a table; only plain queries are explained")
    return ParsedStatement(text, highest_parameter(tree))


def parse_tree(sql):
    """pglast's JSON parse tree of `sql`.

    Raises pglast's ParseError also when the tree nests deeper than Python's json decoder
    recurses (some 300 nested parentheses): the callers treat both alike.
    """
    tree_json = parser.parse_sql_json(sql)
    try:
        return json.loads(tree_json)
    except RecursionError:
        raise parser.ParseError("it nests too deeply to be read") from None


def tree_nodes(tree):
    """Every `(node type, fields)` pair of a pglast JSON tree, depth first.

    A node is a one-key dict named by its type, except in fields typed as one node type:
    the `relation` of INSERT / UPDATE / DELETE / CREATE INDEX ... is a bare RangeVar.
    An explicit stack, not recursion: a deeply nested statement must not overflow Python's.
    """
    pending = [tree]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, dict) and key[:1].isupper():
                    yield key, value
                elif key == "relation" and isinstance(value, dict) and "relname" in value:
                    yield "RangeVar", value
                if isinstance(value, (dict, list)):
                    pending.append(value)


def highest_parameter(tree):
    """The highest `$n` in a parse tree (0 when none): the arity of the statement."""
    numbers = (body.get("number", 0) for kind, body in tree_nodes(tree) if kind == "ParamRef")
    return max(numbers, default=0)


def plan_nodes(plan_json):
    """Every node of an EXPLAIN (FORMAT JSON) result, top first (subplans included)."""
    pending = [entry["Plan"] for entry in plan_json or [] if "Plan" in entry]
    while pending:
        node = pending.pop()
        yield node
        pending.extend(reversed(node.get("Plans", [])))


def summarize(plan_json, table_rows=None, large_rows=LARGE_TABLE_ROWS):
    """PlanSummary of a plan; `table_rows` maps relation name -> rows in the table, if known.

    A seq scan is large when the table (or, unknown, the scan's own estimate) reaches
    `large_rows`: a filtered scan of a big table returns few rows but still reads them all.
    """
    nodes = list(plan_nodes(plan_json))
    if not nodes:
        return PlanSummary(top_node="", total_cost=0.0, estimated_rows=0.0, node_types={})
    table_rows = table_rows or {}
    scans = []
    for node in nodes:
        if node["Node Type"] != "Seq Scan":
            continue
        relation = node.get("Relation Name", "")
        in_table = table_rows.get(relation)
        estimated = float(node.get("Plan Rows", 0))
        large = max(in_table or 0, estimated) >= large_rows
        scans.append(SeqScan(relation, estimated, in_table, large))
    top = nodes[0]
    return PlanSummary(
        top_node=top["Node Type"],
        total_cost=float(top.get("Total Cost", 0)),
        estimated_rows=float(top.get("Plan Rows", 0)),
        node_types=dict(Counter(node["Node Type"] for node in nodes).most_common()),
        seq_scans=scans,
    )


@sensitive_variables()  # all: psycopg's frames below hold the password under other names
def explain(dsn, sql, *, timeout=None):
    """PlanResult of `sql` planned on the server at `dsn`; the statement is never executed.

    The caller must pass only statements collected from that same server (the views pass
    Query rows of that database): this function trusts the text's origin, and refuses
    only what is not a plannable query. `timeout` (seconds) defaults to
    EXPLAIN_STATEMENT_TIMEOUT. Raises ExplainRefused or ExplainFailed; the latter's message
    is scrubbed of the DSN's secrets, and psycopg's error, which is not, is suppressed
    (`from None`: error reports do not show it).
    """
    statement = parse_statement(sql)
    timeout_ms = int((settings.EXPLAIN_STATEMENT_TIMEOUT if timeout is None else timeout) * 1000)
    try:
        with targets.connect(dsn) as connection:
            connection.read_only = True
            try:
                plan_json = _plan(connection, statement, timeout_ms)
                table_rows = _table_rows(connection, plan_json)
            finally:
                connection.rollback()
    except psycopg.Error as error:
        raise ExplainFailed(scrub(_message(error), dsn)) from None
    generic = statement.parameter_count > 0
    return PlanResult(plan_json, summarize(plan_json, table_rows), generic=generic)


def _plan(connection, statement, timeout_ms):
    """Run the EXPLAIN in the connection's (read-only) transaction; the plan JSON.

    The cursor is binary because psycopg then sends every statement with PQsendQueryParams
    (it uses the simple-query protocol, which runs any number of statements, only for text
    results without parameters): the server refuses a text of several statements.
    """
    with connection.cursor(binary=True) as cursor:
        cursor.execute(
            "SELECT set_config('standard_conforming_strings', 'on', true),"
            " set_config('statement_timeout', %s, true)",
            [str(timeout_ms)],
        )
        if statement.parameter_count == 0:
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement.text)
            return cursor.fetchone()[0]
        nulls = ", ".join(["NULL"] * statement.parameter_count)
        cursor.execute(f"PREPARE {PREPARED_NAME} AS " + statement.text)
        cursor.execute("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {PREPARED_NAME}({nulls})")
        plan_row = cursor.fetchone()
        cursor.execute(f"DEALLOCATE {PREPARED_NAME}")
        return plan_row[0]


def _table_rows(connection, plan_json):
    """Rows in each seq-scanned table (pg_class.reltuples; unanalysed tables left out)."""
    relations = sorted({
        node["Relation Name"] for node in plan_nodes(plan_json)
        if node["Node Type"] == "Seq Scan" and "Relation Name" in node
    })
    if not relations:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, reltuples FROM unnest(%s::text[]) AS name"
            " JOIN pg_class ON pg_class.oid = to_regclass(quote_ident(name))"
            " WHERE reltuples >= 0",
            [relations],
        )
        return {name: float(rows) for name, rows in cursor.fetchall()}


def _message(error):
    diagnostic = getattr(error, "diag", None)
    return (diagnostic and diagnostic.message_primary) or str(error).strip()


@sensitive_variables("dsn")
def explain_key(database_id, dsn, sql):
    """The `explain` cache key: `explain:{database_id}:{server}:{fingerprint}`.

    `server` is a keyed hash of the DSN, never the DSN (it holds the password): a DSN
    edited in the admin must miss the plans of the old server.
    """
    server = salted_hmac("pganalytics.explain", dsn, algorithm="sha256").hexdigest()[:16]
    return f"explain:{database_id}:{server}:{fingerprint(sql).fingerprint}"


@sensitive_variables("dsn")
def cached_explain(database_id, dsn, sql, *, timeout=None):
    """explain() through the `explain` cache, under explain_key().

    Refusals are cached too (they depend only on the text); failures are not, so a
    timeout on a busy server is retried next time. Same caller rule as explain().
    """
    key = explain_key(database_id, dsn, sql)
    outcome = caches["explain"].get_or_set(key, lambda: _outcome(dsn, sql, timeout))
    if isinstance(outcome, ExplainRefused):
        raise outcome
    return outcome


def _outcome(dsn, sql, timeout):
    try:
        return explain(dsn, sql, timeout=timeout)
    except ExplainRefused as refused:
        return refused
