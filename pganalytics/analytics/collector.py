"""pg_stat_statements of a monitored database -> one Snapshot with its QueryStat rows.

Reading and storing are separate steps: the target is read over its own short-lived
psycopg connection (connect timeout, statement_timeout) before any transaction of ours is
open, so a slow target never holds our database. Storing then happens in one transaction,
in bulk, with the previous snapshot of the same database as the baseline for the interval
deltas; a reading older than a snapshot stored meanwhile is dropped, so snapshots are
stored in the order they were taken.

Counters in pg_stat_statements only grow until statistics are reset, entries are evicted
or stats are lost in a crash. A reset shows as a changed `stats_reset` (full reset) or as a
query whose counters went down (a reset limited to one database or query); either way the
delta is the new cumulative value: what accrued since the reset, never negative.
"""

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import psycopg
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.template.defaultfilters import pluralize
from django.utils import timezone
from psycopg import sql

from pganalytics import targets
from pganalytics.analytics import advisor, data_version, explain, history
from pganalytics.dsn import scrub
from pganalytics.fingerprint import Fingerprint, compute_fingerprint, fold_whitespace
from pganalytics.formats import timestamp
from pganalytics.models import MonitoredDatabase, Query, QueryStat, Snapshot
from pganalytics.signals import snapshot_collected

logger = logging.getLogger(__name__)
APPLICATION_NAME = "pganalytics-collector"
STATEMENT_TIMEOUT_MS = 30_000
READ_DEADLINE_SECONDS = 60  # a target still not read by then is cut off (targets.deadline)
# The longest a collection can take: connecting, then reading until cut off.
COLLECTION_LEASE = timedelta(seconds=targets.MAX_CONNECT_TIMEOUT_SECONDS + READ_DEADLINE_SECONDS)
MINIMUM_SERVER_VERSION = 140000
MARKER = targets.MARKER
COUNTERS = (
    "calls",
    "total_exec_time",
    "min_exec_time",
    "max_exec_time",
    "mean_exec_time",
    "stddev_exec_time",
    "rows",
    "shared_blks_hit",
    "shared_blks_read",
    "plans",
    "total_plan_time",
)
DELTA_COUNTERS = ("calls", "total_exec_time", "rows", "shared_blks_hit", "shared_blks_read")
# What pg_stat_statements shows instead of the text of another role's statement to a role
# without pg_read_all_stats (its queryid is null too): such rows cannot be fingerprinted.
HIDDEN_TEXT = "<insufficient privilege>"


class CollectionError(Exception):
    """A monitored database could not be collected; the message names it and says why."""

    def __init__(self, database, reason):
        self.database = database
        self.reason = reason
        super().__init__(f"{database.name}: {reason}")


@dataclass
class Reading:
    """What one read of a target returned: its pg_stat_statements rows and their context."""

    taken_at: object
    stats_reset: object
    rows: list  # tuples: query text, userid, queryid, then COUNTERS in order
    warning: str = ""  # what the rows leave out, and how to fix it
    superuser: bool | None = None  # the DSN's role is a superuser (None: not known)
    dealloc: int | None = None  # pg_stat_statements_info.dealloc (None: not known)
    statements_max: int | None = None  # the server's pg_stat_statements.max (None: not known)


@dataclass
class Group:
    """The pg_stat_statements rows of one fingerprint, summed as one query.

    pg_stat_statements keeps a row per role, queryid and top-level flag (only top-level
    rows of our database are read): rows of one fingerprint differ in role, or in queryid
    where PostgreSQL tells apart what pg_query does not (an IN list of another length, a
    name resolved to another table). Their counters are summed; the text, the role that ran
    it (userid) and queryid are those of the row with the most calls; min/max are taken
    over the rows and the standard deviation is pooled from each row's calls, mean and
    stddev.
    """

    fingerprint: Fingerprint
    text: str = ""
    userid: int | None = None
    queryid: int | None = None
    text_calls: int = -1
    calls: int = 0
    total_exec_time: float = 0.0
    lowest_exec_time: float = math.inf
    max_exec_time: float = 0.0
    sum_of_squares: float = 0.0  # sum of calls * (stddev² + mean²) over the rows
    rows: int = 0
    shared_blks_hit: int = 0
    shared_blks_read: int = 0
    plans: int = 0
    total_plan_time: float = 0.0

    def add(
        self,
        text,
        userid,
        queryid,
        calls,
        total,
        minimum,
        maximum,
        mean,
        stddev,
        rows,
        hit,
        read,
        plans,
        plan_time,
    ):
        if calls > self.text_calls:
            self.text, self.userid, self.queryid, self.text_calls = text, userid, queryid, calls
        self.calls += calls
        self.total_exec_time += total
        self.lowest_exec_time = min(self.lowest_exec_time, minimum)
        self.max_exec_time = max(self.max_exec_time, maximum)
        self.sum_of_squares += calls * (stddev * stddev + mean * mean)
        self.rows += rows
        self.shared_blks_hit += hit
        self.shared_blks_read += read
        self.plans += plans
        self.total_plan_time += plan_time

    @property
    def min_exec_time(self):
        return 0.0 if self.lowest_exec_time == math.inf else self.lowest_exec_time

    @property
    def mean_exec_time(self):
        return self.total_exec_time / self.calls if self.calls else 0.0

    @property
    def stddev_exec_time(self):
        if not self.calls:
            return 0.0
        mean = self.mean_exec_time
        return math.sqrt(max(self.sum_of_squares / self.calls - mean * mean, 0.0))

    def counters(self):
        return {name: getattr(self, name) for name in COUNTERS}


def _failure(database, doing, error):
    return CollectionError(database, f"{doing}: {fold_whitespace(scrub(str(error), database.dsn))}")


def read_statements(database):
    """The pg_stat_statements rows of `database` (its own dbid only), or CollectionError."""
    try:
        connection = targets.connect(
            database.dsn,
            application_name=APPLICATION_NAME,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            autocommit=True,
        )
    except psycopg.Error as error:
        raise _failure(database, f"cannot connect to {database.masked_dsn}", error) from None
    try:
        with targets.deadline(connection, READ_DEADLINE_SECONDS):
            return _read(database, connection)
    except psycopg.Error as error:
        raise _failure(database, "cannot read pg_stat_statements", error) from None


def _read(database, connection):
    version = connection.info.server_version
    if version < MINIMUM_SERVER_VERSION:
        raise CollectionError(
            database, f"PostgreSQL {version // 10000} is not supported: 14 or later is needed"
        )
    columns = _extension_columns(connection)
    if "pg_stat_statements" not in columns:
        raise CollectionError(
            database,
            f"pg_stat_statements is not installed in database {connection.info.dbname!r}: "
            "run CREATE EXTENSION pg_stat_statements there "
            "(and preload it with shared_preload_libraries)",
        )
    schema, statement_columns = columns["pg_stat_statements"]
    missing = {"queryid", *COUNTERS} - statement_columns
    if missing:
        raise CollectionError(
            database,
            "pg_stat_statements is too old (no " + ", ".join(sorted(missing)) + "): "
            "run ALTER EXTENSION pg_stat_statements UPDATE",
        )
    taken_at = history.app_clock()  # one clock for every collector (see claim_due)
    stats_reset = dealloc = None
    if "pg_stat_statements_info" in columns:
        info = sql.Identifier(schema, "pg_stat_statements_info")
        stats_reset, dealloc = connection.execute(
            sql.SQL(MARKER + " SELECT stats_reset, dealloc FROM {}").format(info)
        ).fetchone()
    statements_max = connection.execute(
        MARKER + " SELECT current_setting('pg_stat_statements.max', true)::int"
    ).fetchone()[0]
    rows = connection.execute(_statements_query(schema, statement_columns)).fetchall()
    visible = [row for row in rows if row[0] != HIDDEN_TEXT]
    warning = ""
    hidden = len(rows) - len(visible)
    if hidden:
        role = sql.Identifier(connection.info.user).as_string(connection)
        warning = (
            f"{hidden} statement{pluralize(hidden)} of other roles hidden: "
            f"GRANT pg_read_all_stats TO {role}"
        )
    return Reading(
        taken_at=taken_at,
        stats_reset=stats_reset,
        rows=visible,
        warning=warning,
        superuser=connection.info.parameter_status("is_superuser") == "on",
        dealloc=dealloc,
        statements_max=statements_max,
    )


def _extension_columns(connection):
    """{view name: (schema, set of column names)} of the extension's views, wherever installed."""
    found = connection.execute(
        MARKER
        + """ SELECT n.nspname, c.relname, array_agg(a.attname::text)
        FROM pg_extension e
        JOIN pg_depend d ON d.refobjid = e.oid AND d.deptype = 'e'
            AND d.classid = 'pg_class'::regclass
        JOIN pg_class c ON c.oid = d.objid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE e.extname = 'pg_stat_statements'
        GROUP BY n.nspname, c.relname"""
    ).fetchall()
    return {relname: (schema, set(names)) for schema, relname, names in found}


def _statements_query(schema, statement_columns):
    """The read of the database's statements, but the app's own: marked and run by the
    session's role, or marked and one of the few fixed statements EXPLAIN and the index
    advisor send as another role. A role that learnt the marker can hide nothing of its own
    behind it."""
    top_level_only = sql.SQL(" AND toplevel") if "toplevel" in statement_columns else sql.SQL("")
    return sql.SQL(
        MARKER + " SELECT query, userid, queryid, {counters} FROM {view}"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND query IS NOT NULL{top_level_only} AND NOT (query LIKE {marked} AND ("
        " userid = (SELECT oid FROM pg_roles WHERE rolname = session_user)"
        " OR query LIKE ANY ({as_other_roles})))"
    ).format(
        counters=sql.SQL(", ").join(sql.Identifier(name) for name in COUNTERS),
        view=sql.Identifier(schema, "pg_stat_statements"),
        marked=sql.Literal(MARKER + "%"),
        as_other_roles=sql.Literal(
            [MARKER + pattern for pattern in explain.AS_OTHER_ROLES + advisor.AS_OTHER_ROLES]
        ),
        top_level_only=top_level_only,
    )


def group_by_fingerprint(rows):
    """{fingerprint: Group} of pg_stat_statements rows; texts that do not parse still group."""
    groups = {}
    for text, *counters in rows:
        found = compute_fingerprint(text)
        group = groups.get(found.fingerprint)
        if group is None:
            group = groups[found.fingerprint] = Group(found)
        group.add(text, *counters)
    return groups


def went_down(current, previous):
    """True when a counter of the query is lower than at the previous snapshot: a reset."""
    return previous is not None and any(current[name] < previous[name] for name in DELTA_COUNTERS)


def interval_deltas(current, previous, *, first_snapshot, stats_were_reset):
    """Delta fields of one query from its `current` and `previous` counters (dicts or None).

    The database's first snapshot has no baseline: all null. A query absent from the
    previous snapshot, a reset, or a counter that went down count from zero: the delta is
    the cumulative value.
    """
    names = ["delta_" + name for name in DELTA_COUNTERS]
    if first_snapshot:
        return dict.fromkeys(names + ["delta_mean_exec_time"])
    counts_from_zero = stats_were_reset or previous is None or went_down(current, previous)
    deltas = {
        delta: current[name] - (0 if counts_from_zero else previous[name])
        for delta, name in zip(names, DELTA_COUNTERS)
    }
    calls = deltas["delta_calls"]
    deltas["delta_mean_exec_time"] = deltas["delta_total_exec_time"] / calls if calls else 0.0
    return deltas


def evicted_since(previous, dealloc, stats_were_reset):
    """Times the server evicted entries since the `previous` Snapshot, from the cumulative
    `dealloc`s: None without both; a statistics reset zeroes dealloc, so after one (or when
    it went down) it counts from zero."""
    if previous is None or previous.dealloc is None or dealloc is None:
        return None
    if stats_were_reset or dealloc < previous.dealloc:
        return dealloc
    return dealloc - previous.dealloc


def store(database, reading, started):
    """Snapshot + QueryStat rows of the statements of `reading` that moved, in one
    transaction; returns the Snapshot.

    A statement moved when one of its counters differs from those its Query kept when it
    last moved; those counters are the baseline of its delta, which therefore falls in the
    interval since the previous snapshot. Collections of one database store one at a time
    (the database's row is locked). A reading older than a snapshot stored meanwhile (the
    admin's "Collect now" overtaken by `collect --every`) is dropped with a CollectionError:
    stored, it would make a negative interval and a false reset, and the newer snapshot's
    cumulative counters already hold everything it saw. So is one whose hour is rolled up
    already (history.rolled_up_until).
    """
    groups = group_by_fingerprint(reading.rows)
    history.ensure_partition(QueryStat, reading.taken_at)
    with transaction.atomic():
        MonitoredDatabase.objects.select_for_update().get(pk=database.pk)
        rolled_up = history.rolled_up_until()
        if rolled_up is not None and reading.taken_at < rolled_up:
            raise CollectionError(
                database,
                f"this reading, taken at {timestamp(reading.taken_at)}, falls in an hour "
                "already rolled up: it is dropped (the next snapshot counts it)",
            )
        previous = database.snapshots.order_by("-taken_at", "-pk").first()
        if previous is not None and previous.taken_at >= reading.taken_at:
            raise CollectionError(
                database,
                f"a snapshot taken at {timestamp(previous.taken_at)} was stored while "
                "this one was read: this older reading is dropped (that snapshot counts it)",
            )
        known = _known_queries(database, groups, reading.taken_at)
        stats_were_reset = (
            previous is not None
            and previous.stats_reset is not None
            and reading.stats_reset != previous.stats_reset
        )
        snapshot = Snapshot.objects.create(
            database=database,
            taken_at=reading.taken_at,
            stats_reset=reading.stats_reset,
            statement_count=len(reading.rows),
            reset_detected=stats_were_reset,
            warning=reading.warning,
            duration_ms=0.0,
            dealloc=reading.dealloc,
            evicted=evicted_since(previous, reading.dealloc, stats_were_reset),
            statements_max=reading.statements_max,
        )
        interval = (reading.taken_at - previous.taken_at).total_seconds() if previous else None
        stats = []
        for fingerprint, group in groups.items():
            current = group.counters()
            query_id, before = known[fingerprint]
            if before == {name: current[name] for name in DELTA_COUNTERS}:
                continue  # did not move
            snapshot.reset_detected |= went_down(current, before)
            deltas = interval_deltas(
                current, before, first_snapshot=previous is None, stats_were_reset=stats_were_reset
            )
            stats.append(
                {
                    "query_id": query_id,
                    "taken_at": reading.taken_at,
                    "snapshot_id": snapshot.pk,
                    "database_id": database.pk,
                    "queryid": group.queryid,
                    "interval_seconds": interval,
                    **current,
                    **deltas,
                }
            )
        copy_rows(QueryStat, stats)
        _keep_baselines(stats, reading.taken_at)
        snapshot.duration_ms = (time.perf_counter() - started) * 1000
        snapshot.save(update_fields=["reset_detected", "duration_ms"])
        database.last_collected_at = reading.taken_at
        database.last_error = ""
        database.connects_as_superuser = reading.superuser
        database.save(
            update_fields=["last_collected_at", "last_error", "connects_as_superuser", "updated_at"]
        )
        transaction.on_commit(
            partial(snapshot_collected.send, sender=Snapshot, snapshot=snapshot), robust=True
        )
    return snapshot


def copy_rows(model, rows):
    """Insert `rows` (dicts keyed by field attname) into `model`'s table with COPY.

    The QueryStat rows of a snapshot are the bulk of collection: for 5,000 of them
    bulk_create spends ~0.3 s building model instances and 100,000 parameters, COPY on the
    same connection and transaction ~0.03 s. A serial primary key comes from the table's
    default.
    """
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    statement = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
        table=sql.Identifier(model._meta.db_table),
        columns=sql.SQL(", ").join(sql.Identifier(field.column) for field in fields),
    )
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[field.attname] for field in fields])


def _known_queries(database, groups, seen_at):
    """{fingerprint: (Query id, its baseline counters or None)} of `groups`, creating a
    Query for each new fingerprint (no baseline: it counts from zero).

    Safe without ON CONFLICT because the caller holds the database's row lock. Only the
    reading's fingerprints are fetched (the database may have seen many more over time); the
    queries the reading lacks lose their baseline: evicted, or reset one by one, they count
    from zero when they come back, as the server does. A Query stored before roles were
    recorded takes its text and role from one row now: EXPLAIN plans a text as the role that
    ran that very text.
    """
    baseline = [f"last_{name}" for name in DELTA_COUNTERS]
    present = list(groups)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Query._meta.db_table} SET "
            + ", ".join(f"{name} = NULL" for name in baseline)
            + " WHERE database_id = %s AND last_calls IS NOT NULL"
            " AND NOT fingerprint = ANY(%s::text[])",
            [database.pk, present],
        )
    rows = Query.objects.filter(database=database, fingerprint__in=present).values_list(
        "fingerprint", "pk", "userid", *baseline
    )
    known, without_role = {}, []
    for fingerprint, pk, userid, *counters in rows:
        before = None if counters[0] is None else dict(zip(DELTA_COUNTERS, counters))
        known[fingerprint] = (pk, before)
        group = groups.get(fingerprint)
        if userid is None and group is not None and group.userid is not None:
            without_role.append(Query(pk=pk, text=group.text, userid=group.userid))
    Query.objects.bulk_update(without_role, ["text", "userid"])
    created = Query.objects.bulk_create(
        Query(
            database=database,
            fingerprint=fingerprint,
            text=group.text,
            userid=group.userid,
            normalized=group.fingerprint.normalized,
            parsed=group.fingerprint.parsed,
            first_seen=seen_at,
            last_seen=seen_at,
        )
        for fingerprint, group in groups.items()
        if fingerprint not in known
    )
    known.update((query.fingerprint, (query.pk, None)) for query in created)
    return known


def _keep_baselines(stats, seen_at):
    """The stored rows' counters become their queries' baselines, in one UPDATE."""
    if not stats:
        return
    columns = ["query_id", *DELTA_COUNTERS]
    arrays = [[row[name] for row in stats] for name in columns]
    types = ["bigint" if name != "total_exec_time" else "float8" for name in columns]
    sets = ", ".join(f"last_{name} = moved.{name}" for name in DELTA_COUNTERS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Query._meta.db_table} SET {sets}, last_seen = %s FROM unnest("
            + ", ".join(f"%s::{kind}[]" for kind in types)
            + f") AS moved({', '.join(columns)}) WHERE id = moved.query_id",
            [seen_at, *arrays],
        )


def collect(database):
    """Read and store one snapshot of `database`; on failure record it in `last_error` and raise."""
    started = time.perf_counter()
    try:
        reading = read_statements(database)
    except CollectionError as error:
        database.last_error = str(error)
        MonitoredDatabase.objects.filter(pk=database.pk).update(
            last_error=database.last_error, updated_at=timezone.now()
        )
        data_version.changed(database.pk)
        raise
    return store(database, reading, started)


def outcome_of(database):
    """collect(database)'s Snapshot, or its CollectionError returned, not raised.

    An unexpected error (a bug, our own database gone) becomes a CollectionError naming the
    database too (its traceback is logged), so a caller going through several databases
    still collects the others.
    """
    try:
        return collect(database)
    except CollectionError as error:
        return error
    except Exception as error:
        logger.exception("collecting %s failed unexpectedly", database.name)
        return _failure(database, f"unexpected {type(error).__name__}", error)


def outcome_in_own_connection(database):
    """outcome_of(database) in a worker thread: Django opens the thread a connection of its
    own, closed here (given back to the pool) so that no finished thread keeps one."""
    try:
        return outcome_of(database)
    finally:
        connection.close()


def enabled_databases(name=None):
    """The enabled monitored databases (or the one named), by name."""
    databases = MonitoredDatabase.objects.filter(enabled=True).order_by("name")
    return databases if name is None else databases.filter(name=name)


def collect_all(name=None, concurrency=1):
    """[(database, Snapshot or CollectionError)] for every enabled database (or the one named),
    by name; with a `concurrency` above 1 that many at once, each in a thread of its own."""
    databases = list(enabled_databases(name))
    if concurrency == 1:
        return [(database, outcome_of(database)) for database in databases]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(zip(databases, pool.map(outcome_in_own_connection, databases)))


def claim_due(period, limit, name=None, exclude=()):
    """Up to `limit` enabled databases (or the one named) due for collection, claimed by
    moving their due time on by `period` (a timedelta) in the transaction that locks them:
    other collectors skip them while locked (SKIP LOCKED) and find them not due after the
    commit, so no database is collected twice in a period. Due times follow the app
    database's clock, which collectors on several machines share. `exclude`: ids this
    collector is still collecting (a hung target outlasting its period).

    The claim is a lease as long as a collection can take (COLLECTION_LEASE), so that
    another collector does not start a slow target again; release() sets the due time the
    period after the claim once done. Each database gets `claimed_at` (the app's clock)."""
    with transaction.atomic():
        claimed = list(
            enabled_databases(name)
            .filter(Q(next_collection_at__isnull=True) | Q(next_collection_at__lte=Now()))
            .exclude(pk__in=exclude)
            .order_by(F("next_collection_at").asc(nulls_first=True), "name")
            .select_for_update(skip_locked=True)[:limit]
        )
        now = history.app_clock()
        MonitoredDatabase.objects.filter(pk__in=[database.pk for database in claimed]).update(
            next_collection_at=now + max(period, COLLECTION_LEASE), collection_period=period
        )
    for database in claimed:
        database.claimed_at = now
    return claimed


def release(database, period):
    """After collecting a claimed `database`: due again the period after its claim."""
    MonitoredDatabase.objects.filter(pk=database.pk).update(
        next_collection_at=database.claimed_at + period
    )

