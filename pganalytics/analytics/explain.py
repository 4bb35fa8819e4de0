"""Safe EXPLAIN of a collected statement on the monitored server it came from.

Safe means the statement is planned, never run: only plain `EXPLAIN (FORMAT JSON)` (never
ANALYZE), of a single SELECT / VALUES / WITH / INSERT / UPDATE / DELETE, inside a READ ONLY
transaction that is always rolled back, with a short statement_timeout so a slow planner
or a lock wait cannot hold a connection of the monitored server. Planning runs code all the
same: it folds IMMUTABLE function calls. READ ONLY refuses writes to tables, not
`pg_read_file` or `lo_export`, so the plan is made as the role that ran the statement and
never with more privilege (see _plan), and statements nobody on the server ran are never
planned. Like everything the app runs on a target, the EXPLAIN's statements are not the
target's workload (pganalytics.targets).

The index advisor's what-if plans are made the same way, with hypothetical indexes (hypopg)
created in the session beforehand: `explain(..., hypothetical=...)`.

Statements collected by pg_stat_statements carry `$n` parameters; they get a generic plan
(PREPARE + `plan_cache_mode = force_generic_plan`; `EXPLAIN (GENERIC_PLAN)` of PostgreSQL 16+
cannot be used: over the extended protocol its `$n` become protocol parameters).

The text is checked with pglast, and the server must read it the same way: the transaction
first sets `standard_conforming_strings = on` (pglast's reading of a backslash in a quoted
string; `off` on the database or role would let the server split the text elsewhere), and
every statement goes through the extended query protocol, where the server refuses a text
of more than one statement.
"""

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from django.conf import settings
from django.core.cache import caches
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_variables
from pglast import parser
from psycopg import sql as pgsql
from psycopg.pq import TransactionStatus

from pganalytics import targets
from pganalytics.dsn import scrub
from pganalytics.signals import statement_planned
from pganalytics.fingerprint import fingerprint
from pganalytics.targets import MARKER, PINNED_SEARCH_PATH

EXPLAINABLE = {"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"}
PREPARED_NAME = "pganalytics_explain"
LARGE_TABLE_ROWS = 10_000
# Made as the statement's role (SET ROLE first), so it runs as that role; its body is ours
# alone: the EXPLAIN of the statement prepared beforehand, with the role's search_path (a
# prepared statement is analysed again under another). Its type is qualified and its
# argument given, cast, by the caller under the pinned search_path: nothing outside the
# procedure is resolved by the role's search_path, nor evaluated (a domain's check).
PLAN_PROCEDURE = pgsql.SQL(
    "CREATE PROCEDURE pg_temp.pganalytics_plan(INOUT plan pg_catalog.json)"
    " LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT"
    " AS $body$ BEGIN EXECUTE {explain} INTO plan; END $body$"
)
OPEN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
# What the EXPLAIN sends while acting as another role (pg_stat_statements records it under
# that role), as LIKE patterns after MARKER: fixed utility statements, so that a role that
# learnt the marker can hide nothing of its own behind them (pganalytics.analytics.collector).
AS_OTHER_ROLES = (
    " SET LOCAL ROLE %",
    " CREATE PROCEDURE pg_temp.pganalytics_plan(%",
    f" SET LOCAL search_path = {PINNED_SEARCH_PATH}",
    " SET TRANSACTION READ ONLY",
    " SET LOCAL plan_cache_mode = force_generic_plan",
    " CALL pg_temp.pganalytics_plan(NULL::pg_catalog.json)",
    " ROLLBACK",
)
# SQLSTATE classes of failures that may pass: connection, resources, the operator
# intervening, locks and conflicts; and 57014, a statement timeout or cancel.
TRANSIENT_CLASSES = {"08", "40", "53", "55", "57", "58"}
QUERY_CANCELED = "57014"
TRANSIENT_FAILURE_SECONDS = 30
DEADLINE_MARGIN_SECONDS = 5  # a session still busy this long after its timeout is cut off
# What the plan needs to know of the statement's role, as the session's own role (whose
# search_path is pinned to pg_catalog): its name, whether the session may act as it, is it,
# may it create temporary objects, is the server a standby, who the session is, the database,
# and the role's search_path here (ALTER ROLE ... IN DATABASE, then ALTER ROLE, then ALTER
# DATABASE, then PostgreSQL's default).
ROLE_FACTS = """SELECT r.rolname, pg_catalog.pg_has_role(r.oid, 'MEMBER'),
    r.rolname = session_user,
    pg_catalog.has_database_privilege(r.oid, pg_catalog.current_database(), 'TEMPORARY'),
    pg_catalog.pg_is_in_recovery(), session_user, pg_catalog.current_database(),
    coalesce((
        SELECT pg_catalog.substr(setting, 13)
        FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS setting
        WHERE setting LIKE 'search\\_path=%%'
          AND s.setrole IN (r.oid, 0)
          AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                                    WHERE datname = pg_catalog.current_database()))
        ORDER BY s.setrole = r.oid DESC, s.setdatabase <> 0 DESC
        LIMIT 1), '"$user", public')
FROM pg_catalog.pg_roles r WHERE r.oid = %s::pg_catalog.oid"""


class ExplainRefused(ValueError):
    """The statement is not one we may EXPLAIN; `reason` says why (shown to the user)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class ExplainFailed(RuntimeError):
    """The server could not plan the statement (unknown parameter type, timeout, ...);
    `transient` when trying again later may succeed (a timeout, a connection failure)."""

    def __init__(self, message, transient=False):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):  # cached: pickled with both arguments
        return type(self), (str(self), self.transient)


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
    planned_at: datetime
    role: str  # the role that ran the statement, as which it was planned
    hypothetical_index: str = ""  # a what-if plan's: the name hypopg gave the index


@dataclass(frozen=True)
class Hypothetical:
    """An index to plan with, never built: `definition` is the CREATE INDEX hypopg reads (its
    names quoted), `schema` the one hypopg's functions are in."""

    schema: str
    definition: str


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
def explain(dsn, sql, *, userid, timeout=None, hypothetical=None):
    """PlanResult of `sql` planned on the server at `dsn` as the role `userid` (an OID) that
    ran it; the statement is never executed. With `hypothetical` (a Hypothetical), the
    what-if plan: the index exists for the planner of this session only, and is gone
    (hypopg_reset, then the session's end) before this returns.

    The caller must pass only statements collected from that same server, with the role
    pg_stat_statements recorded for that text (the views pass Query rows of that database).
    `timeout` (seconds) defaults to EXPLAIN_STATEMENT_TIMEOUT. Raises ExplainRefused or
    ExplainFailed; the latter's message is scrubbed of the DSN's secrets, and psycopg's
    error, which is not, is suppressed (`from None`: error reports do not show it).
    """
    statement = parse_statement(sql)
    if userid is None:
        raise ExplainRefused(
            "the role that ran it is not known yet (collected before roles were recorded): "
            "the next snapshot records it"
        )
    seconds = settings.EXPLAIN_STATEMENT_TIMEOUT if timeout is None else timeout
    timeout_option = f"-c statement_timeout={int(seconds * 1000)}"
    try:
        connection = targets.connect(dsn, options=timeout_option, autocommit=True)
        with targets.deadline(connection, seconds + DEADLINE_MARGIN_SECONDS):
            try:
                role, index_name, plan_json = _plan(connection, statement, userid, hypothetical)
            finally:
                if connection.info.transaction_status in OPEN_TRANSACTION:
                    connection.execute(MARKER + " ROLLBACK")
                if hypothetical is not None and not connection.closed:
                    connection.execute(pgsql.SQL(MARKER + " SELECT {}()").format(
                        pgsql.Identifier(hypothetical.schema, "hypopg_reset")))
            table_rows = _table_rows(connection, plan_json)
    except psycopg.Error as error:
        message = scrub(error_message(error), dsn)
        raise ExplainFailed(message, transient=is_transient(error)) from None
    return PlanResult(
        plan_json,
        summarize(plan_json, table_rows),
        generic=statement.parameter_count > 0,
        planned_at=timezone.now(),
        role=role,
        hypothetical_index=index_name,
    )


def _plan(connection, statement, userid, hypothetical=None):
    """(role name, hypothetical index name or "", plan JSON) of `statement` planned as role
    `userid`, in a transaction the caller rolls back: nothing runs after the plan in it,
    since the planned code may have changed the transaction's settings (a rollback undoes
    them). A `hypothetical` index is made first, as the session's own role, from our own
    text: hypopg only reads the catalogs for it; the plan that considers it is the role's.

    The planner runs code: it folds IMMUTABLE function calls, and READ ONLY does not stop
    `pg_read_file` or `lo_export`. So the plan is made by the role that ran the statement,
    with no way back to ours: `SET ROLE` alone would not do, since code run as that role may
    `RESET ROLE` to the session's. Unless the role is the session's own, the EXPLAIN runs in
    a temporary SECURITY DEFINER procedure owned by that role, inside which PostgreSQL
    refuses any change of role or session authorization; the procedure disappears with the
    rollback. The statement's names are resolved with that role's own search_path, and only
    they: the pinned one is back before the procedure is called.

    The cursor is binary because psycopg then sends every statement with PQsendQueryParams
    (it uses the simple-query protocol, which runs any number of statements, only for text
    results without parameters): the server refuses a text of several statements.
    """
    count = statement.parameter_count
    arguments = f"({', '.join(['NULL'] * count)})" if count else ""
    explain_prepared = f"{MARKER} EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {PREPARED_NAME}{arguments}"
    with connection.cursor(binary=True) as cursor:
        def run(command):
            cursor.execute(pgsql.SQL(MARKER + " {}").format(command))

        run(pgsql.SQL("BEGIN"))
        run(pgsql.SQL("SET LOCAL standard_conforming_strings = on"))
        role = statement_role(cursor, userid)
        index_name = ""
        if hypothetical is not None:
            create = pgsql.SQL(MARKER + " SELECT indexname FROM {}(%s::pg_catalog.text)").format(
                pgsql.Identifier(hypothetical.schema, "hypopg_create_index"))
            index_name = cursor.execute(create, [hypothetical.definition]).fetchone()[0]
        cursor.execute(
            MARKER + " SELECT pg_catalog.set_config('search_path', %s, true)", [role.search_path]
        )
        if not role.own:
            run(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(role.name)))
        run(pgsql.SQL(f"PREPARE {PREPARED_NAME} AS ") + pgsql.SQL(statement.text))
        if not role.own:
            run(PLAN_PROCEDURE.format(explain=pgsql.Literal(explain_prepared)))
            run(pgsql.SQL(f"SET LOCAL search_path = {PINNED_SEARCH_PATH}"))
        run(pgsql.SQL("SET TRANSACTION READ ONLY"))
        run(pgsql.SQL("SET LOCAL plan_cache_mode = force_generic_plan"))
        if role.own:
            cursor.execute(explain_prepared)
        else:
            run(pgsql.SQL("CALL pg_temp.pganalytics_plan(NULL::pg_catalog.json)"))
        return role.name, index_name, cursor.fetchone()[0]


@dataclass(frozen=True)
class Role:
    name: str
    own: bool  # the session's own role: no procedure needed
    search_path: str  # as its sessions on this database get it


def statement_role(cursor, userid):
    """The Role of OID `userid`, or ExplainRefused saying why the plan cannot be made as it
    (nor anything else read with its rights)."""
    cursor.execute(MARKER + " " + ROLE_FACTS, [userid])
    found = cursor.fetchone()
    if found is None:
        raise ExplainRefused(f"the role that ran it (OID {userid}) no longer exists")
    name, member, own, temporary, standby, monitoring, database, search_path = found
    role, grantee = (pgsql.Identifier(n).as_string(cursor) for n in (name, monitoring))
    if own:
        return Role(name, True, search_path)
    if not member:
        raise ExplainRefused(
            f"it is planned only as the role that ran it, {role}, and {grantee} may not act "
            f"as {role}: GRANT {role} TO {grantee} to see its plans"
        )
    if not temporary:
        database = pgsql.Identifier(database).as_string(cursor)
        raise ExplainRefused(
            f"{role} may not create temporary objects in this database (the plan is made in a "
            f"temporary procedure owned by it): GRANT TEMPORARY ON DATABASE {database} TO {role}"
        )
    if standby:
        raise ExplainRefused(
            f"the server is a standby: a plan as {role} needs a temporary procedure, which a "
            "read-only server cannot create; monitor the primary for plans"
        )
    return Role(name, False, search_path)


def _table_rows(connection, plan_json):
    """Rows in each seq-scanned table (pg_class.reltuples; unanalysed tables left out), by
    the schema and name the verbose plan gives; as the session's own role, after the plan's
    transaction, with the session's pinned search_path."""
    scanned = sorted({
        (node["Schema"], node["Relation Name"]) for node in plan_nodes(plan_json)
        if node["Node Type"] == "Seq Scan" and "Schema" in node and "Relation Name" in node
    })
    if not scanned:
        return {}
    schemas, names = zip(*scanned)
    rows = connection.execute(
        MARKER + " SELECT t.name, c.reltuples"
        " FROM ROWS FROM (pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[]))"
        " AS t(schema, name)"
        " JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema"
        " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.name"
        " WHERE c.reltuples >= 0",
        [list(schemas), list(names)],
    ).fetchall()
    return {name: float(reltuples) for name, reltuples in rows}


def is_transient(error):
    """True for a failure that may pass (timeout, connection, resources, a lock or a
    conflict), False for one the same statement, schema and role will meet again."""
    state = getattr(error, "sqlstate", None)
    return state is None or state[:2] in TRANSIENT_CLASSES or state == QUERY_CANCELED


def error_message(error):
    diagnostic = getattr(error, "diag", None)
    return (diagnostic and diagnostic.message_primary) or str(error).strip()


@sensitive_variables("dsn")
def server_digest(dsn):
    """A keyed hash of a DSN for cache keys, never the DSN itself (it holds the password)."""
    return salted_hmac("pganalytics.analytics.explain", dsn, algorithm="sha256").hexdigest()[:16]


@sensitive_variables("dsn")
def explain_key(database_id, dsn, sql, hypothetical=None):
    """The `explain` cache key: `explain:{database_id}:{server}:{fingerprint}`, and for a
    what-if plan `whatif:{database_id}:{server}:{fingerprint}:{index}`.

    `server` is a keyed hash of the DSN, never the DSN (it holds the password): a DSN
    edited in the admin must miss the plans of the old server. `index` is a hash of the
    hypothetical index's definition.
    """
    key = f"{database_id}:{server_digest(dsn)}:{fingerprint(sql).fingerprint}"
    if hypothetical is None:
        return f"explain:{key}"
    index = hashlib.sha256(f"{hypothetical.schema}\0{hypothetical.definition}".encode())
    return f"whatif:{key}:{index.hexdigest()[:16]}"


@sensitive_variables("dsn")
def cached_explain(database_id, dsn, sql, *, userid, version=None, timeout=None,
                   hypothetical=None):
    """explain() through the `explain` cache, under explain_key() and `version` (the data
    version of the database: a new snapshot, which may follow a schema change, plans anew);
    what-if plans (`hypothetical`) alike, under their own keys.

    Plans, refusals and failures that will come again are kept for the cache's TTL;
    transient failures (a timeout, a target that does not answer) for
    TRANSIENT_FAILURE_SECONDS, so a failing or slow target is neither reconnected to nor
    waited for on every view. Each plan made here, not a what-if one, is sent as
    signals.statement_planned (once: cached plans are not). Same caller rule as explain().
    """
    key = explain_key(database_id, dsn, sql, hypothetical)
    cache = caches["explain"]
    computed = []

    def outcome():
        try:
            computed.append(
                explain(dsn, sql, userid=userid, timeout=timeout, hypothetical=hypothetical)
            )
        except (ExplainRefused, ExplainFailed) as error:
            computed.append(error)
        return computed[-1]

    found = cache.get_or_set(key, outcome, version=version)
    if isinstance(found, ExplainFailed) and found.transient and computed:
        cache.touch(key, TRANSIENT_FAILURE_SECONDS, version=version)
    if hypothetical is None and computed and isinstance(computed[-1], PlanResult):
        made = computed[-1]
        statement_planned.send(PlanResult, database_id=database_id, sql=sql, result=made)
    if isinstance(found, Exception):
        raise found
    return found
