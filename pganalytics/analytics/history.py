"""History that stays small and fast: day partitions, hourly and daily rollups, retention.

Raw intervals (QueryStat) live in one partition per UTC day, made ahead by `compact` (and by
a collection that finds its day missing), and are kept RAW_RETENTION. `compact` sums them
into HourlyStat (also day-partitioned, kept HOURLY_RETENTION) and those into DailyStat (kept
DAILY_RETENTION, as are the plans the app made: plan_history): an interval belongs to the hour
and the day its snapshot was taken in, so a window of whole hours or days sums the same from
any resolution. Retention drops whole
partitions, never deleting raw rows one by one, and never what is not rolled up yet.

Rollups are remade from their source for whole buckets (idempotent), up to a watermark
(RollupState) that one compaction at a time moves (an advisory lock: another does nothing).
Collections read the watermark under a share lock and refuse a reading older than it
(pganalytics.analytics.collector), while the compaction moving it holds it exclusively: no interval
lands in an hour already summed. Only hours that ended ROLLUP_GRACE ago are summed, so that
a reading in flight is not refused.
"""

import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from psycopg import sql

from pganalytics.analytics import plan_history
from pganalytics.analytics.data_version import every_database_changed
from pganalytics.models import DailyStat, HourlyStat, QueryStat, RollupState, Snapshot

HOUR = timedelta(hours=1)
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)  # the open end of the newest raw intervals
DAY = timedelta(days=1)
ROLLUP_GRACE = timedelta(minutes=10)
LOCK_TIMEOUT = "SET LOCAL lock_timeout = '1s'"  # for the DDL on the partitioned tables
LOCK_NOT_AVAILABLE = "55P03"
COMPACTION_LOCK = 0x7067612D68697374  # advisory lock key: "pga-hist"
PARTITIONS_AHEAD = 3  # days made in advance, so collections never wait on DDL
PARTITIONED = (QueryStat, HourlyStat)
DELTAS = ("calls", "total_exec_time", "rows", "shared_blks_hit", "shared_blks_read")
RUNNING = ", ".join(f"running_{name}" for name in DELTAS)
# The days [from, until) of a database's statements that moved since `from`: each one's
# running totals at the end of its newest day before `until`, less those before `from` (two
# index lookups a statement).
DAYS_BETWEEN = f"""
SELECT q.id, {", ".join(f"e.running_{name} - coalesce(s.running_{name}, 0)" for name in DELTAS)}
FROM pganalytics_query q
CROSS JOIN LATERAL (SELECT %s::timestamptz AS since, %s::timestamptz AS until) w
CROSS JOIN LATERAL (
    SELECT {RUNNING} FROM pganalytics_dailystat
    WHERE query_id = q.id AND bucket < w.until ORDER BY bucket DESC LIMIT 1) e
LEFT JOIN LATERAL (
    SELECT {RUNNING} FROM pganalytics_dailystat
    WHERE query_id = q.id AND bucket < w.since ORDER BY bucket DESC LIMIT 1) s ON true
WHERE q.database_id = %s AND q.last_seen >= w.since AND w.since < w.until"""
# Remake the days [start, until) from the hourly rollups, each with its statement's running
# totals: those of its newest day before `start` (none: 0) plus its days so far.
ROLL_DAYS = f"""
WITH days AS (
    SELECT query_id, date_trunc('day', bucket, 'UTC') AS bucket, min(database_id) AS database_id,
           sum(intervals) AS intervals, {", ".join(f"sum({name}) AS {name}" for name in DELTAS)}
    FROM pganalytics_hourlystat WHERE bucket >= %(start)s AND bucket < %(until)s
    GROUP BY 1, 2
), before AS (
    SELECT ids.query_id, {", ".join(f"coalesce(p.running_{n}, 0) AS running_{n}" for n in DELTAS)}
    FROM (SELECT DISTINCT query_id FROM days) ids
    LEFT JOIN LATERAL (
        SELECT {RUNNING} FROM pganalytics_dailystat
        WHERE query_id = ids.query_id AND bucket < %(start)s ORDER BY bucket DESC LIMIT 1) p ON true
)
INSERT INTO pganalytics_dailystat (query_id, bucket, database_id, intervals,
    {", ".join(DELTAS)}, {RUNNING})
SELECT d.query_id, d.bucket, d.database_id, d.intervals, {", ".join(f"d.{n}" for n in DELTAS)},
    {", ".join(
        f"b.running_{n} + (sum(d.{n}) OVER w)" + ("" if n == "total_exec_time" else "::bigint")
        for n in DELTAS
    )}
FROM days d JOIN before b USING (query_id)
WINDOW w AS (PARTITION BY d.query_id ORDER BY d.bucket)
ON CONFLICT (query_id, bucket) DO UPDATE SET intervals = EXCLUDED.intervals,
    {", ".join(f"{n} = EXCLUDED.{n}, running_{n} = EXCLUDED.running_{n}" for n in DELTAS)}
"""


def floor_hour(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def floor_day(moment):
    return floor_hour(moment.astimezone(UTC)).replace(hour=0)


def partition_name(table, day):
    return f"{table}_p{day:%Y%m%d}"


def ensure_partition(model, moment):
    """Make the day partition of `model`'s table that holds `moment`, if it is missing (a
    look at the catalog, no lock on the table, when it is there). Makers of one partition
    take turns (an advisory lock on its name): CREATE ... IF NOT EXISTS alone is not safe
    against a concurrent one."""
    table, day = model._meta.db_table, floor_day(moment)
    name = partition_name(table, day)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        if cursor.fetchone()[0]:
            return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])
        cursor.execute(LOCK_TIMEOUT)
        cursor.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
            ).format(
                sql.Identifier(name), sql.Identifier(table), sql.Literal(day),
                sql.Literal(day + DAY),
            )
        )


def partitions(model):
    """{day: partition name} of `model`'s table, from the catalog."""
    table = model._meta.db_table
    ours = re.compile(re.escape(table) + r"_p(\d{8})")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            [table],
        )
        found = [ours.fullmatch(name) for (name,) in cursor.fetchall()]
    return {
        datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC): match[0]
        for match in found if match
    }


def drop_partitions_before(model, cutoff):
    """Drop `model`'s day partitions that end at or before `cutoff`; their days, oldest first.

    Each drop is its own short transaction: it locks the parent table, and gives up after
    LOCK_TIMEOUT rather than queue every reader and writer behind a long one (a backup);
    the next compaction drops what is left."""
    dropped = []
    for day, name in sorted(partitions(model).items()):
        if day + DAY > cutoff:
            break
        with gives_way() as given_way:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(LOCK_TIMEOUT)
                cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        if given_way:
            break
        dropped.append(day)
    return dropped


@contextmanager
def gives_way():
    """A list, true once the block gave up waiting for a lock (LOCK_TIMEOUT): DDL on the
    partitioned tables is left for the next compaction rather than queue everyone."""
    given_way = []
    try:
        yield given_way
    except OperationalError as error:
        if getattr(error.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        given_way.append(True)


@dataclass(frozen=True)
class Span:
    """How a window is answered: [start, head_until) from the raw intervals, then
    [head_until, daily_until) from DailyStat, [daily_until, hourly_until) from HourlyStat, and
    the rest (to now) from the raw intervals again."""

    start: datetime
    head_until: datetime
    daily_until: datetime
    hourly_until: datetime
    resolution: str  # "raw", "hourly" or "daily": what a chart of it draws


def span(window, now=None, *, chart=False):
    """The Span of the last `window`.

    Totals read the fewest rows that give them exactly: up to RAW_RETENTION, the window as
    is, its whole hours from the hourly rollups and its ragged ends raw; beyond, from the day
    the window starts in (but no earlier than DAILY_RETENTION keeps), days as running totals
    (two rows a statement). A `chart` draws raw intervals
    up to RAW_RETENTION, hours up to HOURLY_RETENTION (from the hour it starts in), days
    beyond. What the rollups do not hold yet comes from the finer tables.
    """
    now = now or timezone.now()
    since = now - window
    if chart and window <= settings.RAW_RETENTION:
        return Span(since, since, since, since, "raw")
    state = RollupState.objects.filter(pk=1).first() or RollupState()
    if window <= settings.RAW_RETENTION:
        head_until = min(floor_hour(since) + HOUR, now)
        hourly_until = max(head_until, state.hourly_to or head_until)
        return Span(since, head_until, head_until, hourly_until, "raw")
    if chart and window <= settings.HOURLY_RETENTION:
        start = floor_hour(since)
        return Span(start, start, start, max(start, state.hourly_to or start), "hourly")
    start = max(floor_day(since), floor_day(now - settings.DAILY_RETENTION))  # what is kept
    daily_until = max(start, state.daily_to or start)
    hourly_until = max(daily_until, state.hourly_to or daily_until)
    return Span(start, start, daily_until, hourly_until, "daily")


def _tiers(key, value, span, raw_columns, rollup_columns, daily=None):
    """(SQL, parameters) of the rows with `key` = `value` of each table for its part of
    `span`, as `raw_columns` of QueryStat and `rollup_columns` of the rollups; `daily`, an
    (SQL, parameters), stands for DailyStat's part when given."""
    raw = (
        f"SELECT {raw_columns} FROM {QueryStat._meta.db_table}"
        f" WHERE {key} = %s AND delta_calls IS NOT NULL AND taken_at >= %s AND taken_at < %s"
    )
    rollup = f"SELECT {rollup_columns} FROM {{}} WHERE {key} = %s AND bucket >= %s AND bucket < %s"
    days = daily or (
        rollup.format(DailyStat._meta.db_table), [value, span.head_until, span.daily_until]
    )
    text = " UNION ALL ".join([raw, days[0], rollup.format(HourlyStat._meta.db_table), raw])
    params = [
        value, span.start, span.head_until,
        *days[1],
        value, span.daily_until, span.hourly_until,
        value, span.hourly_until, FOREVER,
    ]
    return text, params


def _sums():
    """The DELTAS summed, as columns of their names (counts as bigint, not numeric)."""
    return ", ".join(
        f"sum({name})" + ("" if name == "total_exec_time" else "::bigint") + f" AS {name}"
        for name in DELTAS
    )


def window_totals(database_id, span):
    """(SQL, parameters) of the summed deltas per query of `database_id` over `span`:
    columns query_id and DELTAS. The days are read as differences of running totals: two
    rows a statement, whatever the number of days."""
    tiers, params = _tiers(
        "database_id", database_id, span,
        "query_id, " + ", ".join(f"delta_{name} AS {name}" for name in DELTAS),
        "query_id, " + ", ".join(DELTAS),
        daily=(DAYS_BETWEEN, [span.head_until, span.daily_until, database_id]),
    )
    return f"SELECT query_id, {_sums()} FROM ({tiers}) AS intervals GROUP BY query_id", params


SERIES_UNITS = {"raw": None, "hourly": "hour", "daily": "day"}


def series(query_id, span):
    """[(start, seconds, calls, total_ms, rows, blocks hit, blocks read)] of one query over
    `span`, oldest first: one point per raw interval (`start` is then its end) for a raw span,
    else per hour or per day (the span's resolution), the finer tables summed into those."""
    unit = SERIES_UNITS[span.resolution]
    if unit is None:
        raw_time, rollup_time, length = "taken_at", "bucket", "max(seconds)"
    else:
        raw_time, rollup_time = (f"date_trunc('{unit}', {time}, 'UTC')" for time in
                                 ("taken_at", "bucket"))
        length = f"extract(epoch FROM interval '1 {unit}')::float8"
    tiers, params = _tiers(
        "query_id", query_id, span,
        f"{raw_time} AS start, interval_seconds AS seconds, "
        + ", ".join(f"delta_{name} AS {name}" for name in DELTAS),
        f"{rollup_time}, NULL, " + ", ".join(DELTAS),
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT start, {length}, {_sums()} FROM ({tiers}) AS intervals"
            " GROUP BY start ORDER BY start",
            params,
        )
        return cursor.fetchall()


@dataclass
class Compaction:
    """What one `compact` did."""

    hourly_to: datetime | None = None
    daily_to: datetime | None = None
    hours: int = 0
    days: int = 0
    dropped_raw: list = None
    dropped_hourly: list = None
    deleted_daily: int = 0
    deleted_plans: int = 0
    deleted_snapshots: int = 0
    skipped: bool = False  # another compaction held the watermark


def rolled_up_until():
    """The hourly watermark, share-locked until the caller's transaction ends: no compaction
    moves it meanwhile."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT hourly_to FROM {RollupState._meta.db_table} WHERE id = 1 FOR SHARE"
        )
        found = cursor.fetchone()
    return found and found[0]


def compact(now=None):
    """Roll up what is complete, make partitions ahead, apply retention; a Compaction.

    Safe to run from several processes at once: everything happens in the one that takes
    the compaction lock (held to the end); the others return `skipped`. `now` defaults to
    the app database's clock, which collectors share.
    """
    with compaction_lock() as held:
        if not held:
            return Compaction(skipped=True)
        return _compact(now or app_clock())


@contextmanager
def compaction_lock():
    """True when this session holds the compaction lock, for the block."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [COMPACTION_LOCK])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [COMPACTION_LOCK])


def app_clock():
    """The app database's clock: the one time every collector and compaction shares."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def _compact(now):
    for model in PARTITIONED:
        for ahead in range(PARTITIONS_AHEAD + 1):
            with gives_way() as given_way:
                ensure_partition(model, now + ahead * DAY)
            if given_way:
                break
    with transaction.atomic():
        state, _ = RollupState.objects.select_for_update().get_or_create(pk=1)
        done = Compaction()
        done.hours = roll_hours(state, floor_hour(now - ROLLUP_GRACE))
        done.days = roll_days(state, state.hourly_to)
        state.save()
        done.hourly_to, done.daily_to = state.hourly_to, state.daily_to
    raw_cutoff = min(now - settings.RAW_RETENTION, state.hourly_to or now)
    hourly_cutoff = min(now - settings.HOURLY_RETENTION, state.daily_to or now)
    done.dropped_raw = drop_partitions_before(QueryStat, raw_cutoff)
    done.dropped_hourly = drop_partitions_before(HourlyStat, hourly_cutoff)
    done.deleted_daily = delete_days_before(floor_day(now - settings.DAILY_RETENTION))
    done.deleted_plans = plan_history.prune(floor_day(now - settings.DAILY_RETENTION))
    done.deleted_snapshots = delete_snapshots_before(floor_day(min(raw_cutoff, hourly_cutoff)))
    if done.dropped_raw or done.dropped_hourly or done.deleted_daily:
        every_database_changed()  # a window reaching back that far now finds less
    return done


def roll_hours(state, until):
    """Sum the raw intervals of the hours from the watermark up to `until` into HourlyStat;
    the number of hours. The first compaction starts at the oldest raw interval."""
    start = state.hourly_to or _oldest(QueryStat, "taken_at")
    if start is None or until <= start:
        state.hourly_to = state.hourly_to or until
        return 0
    start = floor_hour(start)
    for day in range(int((until - floor_day(start)) / DAY) + 1):
        ensure_partition(HourlyStat, floor_day(start) + day * DAY)
    _roll(
        HourlyStat,
        source=QueryStat,
        bucket="date_trunc('hour', taken_at, 'UTC')",
        time="taken_at",
        intervals="count(*)",
        sums=[f"delta_{name}" for name in DELTAS],
        start=start,
        until=until,
        only="delta_calls IS NOT NULL",
    )
    state.hourly_to = until
    return int((until - start) / HOUR)


def roll_days(state, until):
    """Sum the hourly rollups of the days from the watermark's up to `until` into DailyStat;
    the day `until` falls in is summed as far as it goes (and again, further, next time), so
    that the daily rows reach as far as the hourly ones."""
    start = state.daily_to or _oldest(HourlyStat, "bucket")
    if until is None or start is None or until <= start:
        state.daily_to = state.daily_to or until
        return 0
    start = floor_day(start)
    with connection.cursor() as cursor:
        cursor.execute(ROLL_DAYS, {"start": start, "until": until})
    state.daily_to = until
    return int((until - start) / DAY)


def _roll(target, *, source, bucket, time, intervals, sums, start, until, only="TRUE"):
    """(Re)make `target`'s rows of the buckets in [start, until) from `source`."""
    columns = ", ".join(["query_id", "bucket", "database_id", "intervals", *DELTAS])
    totals = ", ".join(f"sum({name})" for name in sums)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in ["intervals", *DELTAS])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {target._meta.db_table} ({columns})"
            f" SELECT query_id, {bucket}, min(database_id), {intervals}, {totals}"
            f" FROM {source._meta.db_table}"
            f" WHERE {time} >= %s AND {time} < %s AND {only}"
            f" GROUP BY query_id, {bucket}"
            f" ON CONFLICT (query_id, bucket) DO UPDATE SET {updates}",
            [start, until],
        )


def delete_days_before(cutoff):
    """Delete daily rows before `cutoff` but each query's newest one before it: the running
    totals of a later window's start are read from it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM pganalytics_dailystat d WHERE bucket < %(cutoff)s AND EXISTS ("
            " SELECT 1 FROM pganalytics_dailystat n WHERE n.query_id = d.query_id"
            " AND n.bucket > d.bucket AND n.bucket < %(cutoff)s)",
            {"cutoff": cutoff},
        )
        return cursor.rowcount


def _oldest(model, field):
    return model.objects.order_by(field).values_list(field, flat=True).first()


def delete_snapshots_before(cutoff):
    """Delete snapshots taken before `cutoff` (their raw intervals are gone; kept as long as
    the hourly rollups, they count a window's evictions), but the newest of each database:
    the next collection measures its interval from it. In one statement: no answer depends
    on them any more, so no cached one is moved."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Snapshot._meta.db_table} s WHERE taken_at < %s AND taken_at < ("
            f"SELECT max(taken_at) FROM {Snapshot._meta.db_table} n"
            " WHERE n.database_id = s.database_id)",
            [cutoff],
        )
        return cursor.rowcount
