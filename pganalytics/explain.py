"""Safe EXPLAIN of a collected statement on the monitored server it came from.

Safe means the statement is planned, never run: only plain `EXPLAIN (FORMAT JSON)` (never
ANALYZE), of a single SELECT / VALUES / WITH / INSERT / UPDATE / DELETE, inside a READ ONLY
transaction that is always rolled back, with a short statement_timeout so a slow planner
or a lock wait cannot hold a connection of the monitored server. Read-only matters even
without ANALYZE: planning may fold an IMMUTABLE function call, and if that function lies
about its side effects the transaction refuses them.

Statements collected by pg_stat_statements carry `$n` parameters; they get a generic plan
(`GENERIC_PLAN` on PostgreSQL 16+, PREPARE + `plan_cache_mode = force_generic_plan` before).
"""

import json
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from django.core.cache import caches
from pglast import parser

from pganalytics.fingerprint import fingerprint

EXPLAINABLE = {"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"}
PREPARED_NAME = "pganalytics_explain"
CONNECT_TIMEOUT_SECONDS = 5
LARGE_TABLE_ROWS = 10_000
GENERIC_PLAN_VERSION = 160000


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
        tree = json.loads(parser.parse_sql_json(sql))
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


def highest_parameter(node):
    """The highest `$n` in a parse tree (0 when none): the arity of the statement."""
    if isinstance(node, dict):
        own = node["ParamRef"].get("number", 0) if "ParamRef" in node else 0
        return max([own, *(highest_parameter(value) for value in node.values())])
    if isinstance(node, list):
        return max((highest_parameter(value) for value in node), default=0)
    return 0


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


def explain(dsn, sql, *, timeout=None):
    """PlanResult of `sql` planned on the server at `dsn`; the statement is never executed.

    The caller must pass only statements collected from that same server (the views pass
    Query rows of that database): this function trusts the text's origin, and refuses
    only what is not a plannable query. `timeout` (seconds) defaults to
    EXPLAIN_STATEMENT_TIMEOUT. Raises ExplainRefused or ExplainFailed.
    """
    statement = parse_statement(sql)
    timeout_ms = int((settings.EXPLAIN_STATEMENT_TIMEOUT if timeout is None else timeout) * 1000)
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            connection.read_only = True
            try:
                plan_json = _plan(connection, statement, timeout_ms)
                table_rows = _table_rows(connection, plan_json)
            finally:
                connection.rollback()
    except psycopg.Error as error:
        raise ExplainFailed(_message(error)) from error
    generic = statement.parameter_count > 0
    return PlanResult(plan_json, summarize(plan_json, table_rows), generic=generic)


def _plan(connection, statement, timeout_ms):
    """Run the EXPLAIN in the connection's (read-only) transaction; the plan JSON."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout_ms)])
        if statement.parameter_count == 0:
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement.text)
        elif connection.info.server_version >= GENERIC_PLAN_VERSION:
            cursor.execute("EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + statement.text)
        else:
            nulls = ", ".join(["NULL"] * statement.parameter_count)
            cursor.execute(f"PREPARE {PREPARED_NAME} AS " + statement.text)
            cursor.execute("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
            cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {PREPARED_NAME}({nulls})")
            plan_row = cursor.fetchone()
            cursor.execute(f"DEALLOCATE {PREPARED_NAME}")
            return _as_json(plan_row[0])
        return _as_json(cursor.fetchone()[0])


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


def _as_json(value):
    return json.loads(value) if isinstance(value, str) else value


def _message(error):
    diagnostic = getattr(error, "diag", None)
    return (diagnostic and diagnostic.message_primary) or str(error).strip()


def cached_explain(database_id, dsn, sql, *, timeout=None):
    """explain() through the `explain` cache, key `explain:{database_id}:{fingerprint}`.

    Refusals are cached too (they depend only on the text); failures are not, so a
    timeout on a busy server is retried next time. Same caller rule as explain().
    """
    key = f"explain:{database_id}:{fingerprint(sql).fingerprint}"
    outcome = caches["explain"].get_or_set(key, lambda: _outcome(dsn, sql, timeout))
    if isinstance(outcome, ExplainRefused):
        raise outcome
    return outcome


def _outcome(dsn, sql, timeout):
    try:
        return explain(dsn, sql, timeout=timeout)
    except ExplainRefused as refused:
        return refused
