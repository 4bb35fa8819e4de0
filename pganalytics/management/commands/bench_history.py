"""`manage.py bench_history [--statements 5000] [--days 30] [--json]`: history at scale.

In a scratch app database of its own (the app database's name + `_bench_history`, made,
migrated and dropped by the command), a monitored database gets `--days` of history at one
snapshot a minute, `--moving` of its statements moving in each: the days before the last
`--stored-hours` are generated in SQL a day at a time (each statement's deltas only, its
cumulative columns left at the deltas) and rolled up by `compact` as that day ends, as a
collector running them would have; the last hours go through the collector's own store().
Then, uncached, the top-queries answer for 1 h, 24 h, 7 d and 30 d windows and one query's
30-day history are timed (best of `--repeat`), the rollups are checked against the raw
intervals over the last whole day, and the database's growth per statement and day measured.
"""

import json
import random
import time
from contextlib import contextmanager
from datetime import timedelta

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections
from django.db.models import Sum
from django.utils import timezone
from psycopg import sql
from tqdm import tqdm

from pganalytics.analytics import history, services
from pganalytics.analytics.collector import COUNTERS, DELTA_COUNTERS, Reading, store
from pganalytics.models import (
    DailyStat,
    HourlyStat,
    MonitoredDatabase,
    Query,
    QueryStat,
    Snapshot,
)
from pganalytics.targets import MAINTENANCE_DATABASE, local_dsn

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}
PERIOD = timedelta(minutes=1)
TABLES = {"raw": QueryStat, "hourly": HourlyStat, "daily": DailyStat, "snapshots": Snapshot,
          "queries": Query}
TIERS = {"raw": (QueryStat, "taken_at"), "hourly": (HourlyStat, "bucket"),
         "daily": (DailyStat, "bucket")}
# Raw intervals of one chunk of snapshots: statement k moves in the snapshot numbered i when
# k = j * every + i mod every, for j < moving statements; its deltas are drawn at random.
GENERATED_INTERVALS = """
INSERT INTO pganalytics_querystat (query_id, taken_at, snapshot_id, database_id, calls,
    total_exec_time, min_exec_time, max_exec_time, mean_exec_time, stddev_exec_time, rows,
    shared_blks_hit, shared_blks_read, plans, total_plan_time, interval_seconds, delta_calls,
    delta_total_exec_time, delta_mean_exec_time, delta_rows, delta_shared_blks_hit,
    delta_shared_blks_read)
SELECT query_id, taken_at, snapshot_id, %(database)s, calls, total, mean, mean, mean, 0, calls,
    calls * 4, calls / 10, 0, 0, %(period)s, calls, total, mean, calls, calls * 4, calls / 10
FROM (
    SELECT s.id AS snapshot_id, s.taken_at, (%(queries)s::bigint[])[k + 1] AS query_id,
           calls, calls * (%(latencies)s::float8[])[k + 1] * (0.7 + 0.6 * random()) AS total,
           (%(latencies)s::float8[])[k + 1] AS mean
    FROM (SELECT id, taken_at, row_number() OVER (ORDER BY taken_at) AS i
          FROM pganalytics_snapshot
          WHERE database_id = %(database)s AND taken_at > %(start)s AND taken_at <= %(end)s) s,
         generate_series(0, %(moving)s - 1) j,
         LATERAL (SELECT (j * %(every)s + s.i %% %(every)s)::int AS k,
                         1 + (random() * 20)::int AS calls) drawn
) generated
"""


class Command(BaseCommand):
    help = "Generate a month of history for one server, then time the pages' answers on it."

    def add_arguments(self, parser):
        parser.add_argument("--statements", type=int, default=5000)
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--moving", type=float, default=0.1,
                            help="share of the statements that move in each snapshot")
        parser.add_argument("--stored-hours", type=int, default=6,
                            help="the last hours, collected through store()")
        parser.add_argument("--repeat", type=int, default=5, help="timed runs per answer")
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args, statements, days, moving, stored_hours, repeat, json, **options):
        if statements < 10 or days < 2 or not 0 < moving <= 1 or stored_hours < 1:
            raise CommandError("needs --statements >= 10, --days >= 2, 0 < --moving <= 1, "
                               "--stored-hours >= 1")
        self.quiet = json
        scratch = f"{settings.DATABASES['default']['NAME']}_bench_history"
        with scratch_app_database(scratch):
            call_command("migrate", verbosity=0)
            empty = database_size()
            started = time.monotonic()
            database, queries = self.generate(statements, days, moving, stored_hours)
            generated = time.monotonic() - started
            figures = self.measure(database, queries, statements, days, repeat, empty)
        figures["generated_seconds"] = round(generated, 1)
        self.report(figures, json)

    def say(self, line):
        if not self.quiet:
            self.stdout.write(line)

    def generate(self, statements, days, moving, stored_hours):
        """The monitored database and its Query rows, with `days` of history to now."""
        now = timezone.now()
        start = history.floor_day(now - timedelta(days=days))
        stored_from = history.floor_hour(now - timedelta(hours=stored_hours))
        rng = random.Random(5)
        texts = [f"SELECT c{n} FROM bench_t{n % 50} WHERE id = $1" for n in range(statements)]
        latencies = [rng.lognormvariate(0, 1.5) for _ in texts]
        every = max(1, round(1 / moving))
        database = MonitoredDatabase.objects.create(name="bench-history", dsn="host=bench")
        cumulative = dict.fromkeys(texts, 1)
        store(database, self.reading(start, cumulative, latencies), started=time.perf_counter())
        by_text = dict(Query.objects.filter(database=database).values_list("text", "pk"))
        queries = [by_text[text] for text in texts]
        chunks = int((stored_from - start) / timedelta(days=1)) + 1
        for day in tqdm(range(chunks), desc="days in SQL", disable=self.quiet, unit="day"):
            chunk_start = start + timedelta(days=day)
            chunk_end = min(chunk_start + timedelta(days=1), stored_from)
            self.generate_chunk(database, queries, latencies, chunk_start, chunk_end,
                                statements // every, every, cumulative, texts)
            history.compact(now=chunk_end + history.ROLLUP_GRACE)
        keep_baselines(queries, [self.counters(cumulative[text], latency)
                                 for text, latency in zip(texts, latencies)])
        moments = int((now - stored_from) / PERIOD)
        for number in tqdm(range(moments), desc="snapshots stored", disable=self.quiet):
            for j in range(statements // every):
                text = texts[j * every + number % every]
                cumulative[text] += rng.randint(1, 21)
            moment = stored_from + (number + 1) * PERIOD
            store(database, self.reading(moment, cumulative, latencies), started=0.0)
        history.compact()
        return database, queries

    def counters(self, calls, latency):
        """A statement's pg_stat_statements counters after `calls` of `latency` ms."""
        counters = dict.fromkeys(COUNTERS, 0)
        counters.update(calls=calls, total_exec_time=calls * latency, mean_exec_time=latency,
                        rows=calls, shared_blks_hit=calls * 4, shared_blks_read=calls // 10)
        return counters

    def reading(self, moment, cumulative, latencies):
        rows = [
            (text, 10, None, *self.counters(calls, latency).values())
            for (text, calls), latency in zip(cumulative.items(), latencies)
        ]
        return Reading(taken_at=moment, stats_reset=None, rows=rows)

    def generate_chunk(self, database, queries, latencies, start, end, moving, every,
                       cumulative, texts):
        """Snapshots every PERIOD in (start, end] and their raw intervals, in SQL."""
        history.ensure_partition(QueryStat, start)
        history.ensure_partition(QueryStat, end)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO pganalytics_snapshot (database_id, taken_at, statement_count,"
                " reset_detected, duration_ms, warning)"
                " SELECT %s, t, %s, false, 0, '' FROM generate_series(%s::timestamptz + %s,"
                " %s::timestamptz, %s) t",
                [database.pk, len(queries), start, PERIOD, end, PERIOD],
            )
            cursor.execute(GENERATED_INTERVALS, {
                "database": database.pk, "period": PERIOD.total_seconds(), "queries": queries,
                "latencies": latencies, "start": start, "end": end, "moving": moving,
                "every": every,
            })
        moved = QueryStat.objects.filter(database=database, taken_at__gt=start, taken_at__lte=end)
        index = {query_id: text for query_id, text in zip(queries, texts)}
        for query_id, calls in moved.values_list("query").annotate(calls=Sum("delta_calls")):
            cumulative[index[query_id]] += calls

    def measure(self, database, queries, statements, days, repeat, empty):
        timings = {
            name: best_of(repeat, lambda w=window: services.top_queries(database, window=w))
            for name, window in WINDOWS.items()
        }
        query = Query.objects.get(pk=queries[0])
        timings["history_30d"] = best_of(
            repeat, lambda: services.window_points(query, timedelta(days=30))
        )
        table_bytes = {name: table_size(model) for name, model in TABLES.items()}
        # What one statement's day of history costs in each tier while the tier keeps it:
        # the tier's bytes over the statement-days it holds.
        per_day = {
            name: table_bytes[name] / (statements * held_days(model, field))
            for name, (model, field) in TIERS.items()
        }
        kept = {"raw": settings.RAW_RETENTION, "hourly": settings.HOURLY_RETENTION,
                "daily": settings.DAILY_RETENTION}
        return {
            "statements": statements,
            "days": days,
            "seconds": timings,
            "top_30d_vs_1h": round(timings["30d"] / timings["1h"], 2),
            "bytes": database_size() - empty,
            "bytes_per_statement_day": round(sum(per_day.values()), 1),
            "tier_bytes_per_statement_day": {name: round(cost, 1) for name, cost in per_day.items()},
            "steady_bytes_per_statement": round(
                sum(per_day[name] * kept[name] / timedelta(days=1) for name in TIERS)
            ),
            "rows": {name: model.objects.count() for name, model in TABLES.items()},
            "table_bytes": table_bytes,
            "rollup_totals_equal": rollups_match_raw(database),
        }

    def report(self, figures, as_json):
        if as_json:
            self.stdout.write(json.dumps(figures))
            return
        self.stdout.write(
            f"bench_history: {figures['statements']:,} statements, {figures['days']} days, "
            f"generated in {figures['generated_seconds']} s; rows kept: "
            + ", ".join(f"{name} {count:,}" for name, count in figures["rows"].items())
        )
        self.stdout.write(f"{'answer (uncached)':<22}{'ms':>10}{'vs 1 h':>10}")
        for name, seconds in figures["seconds"].items():
            label = f"top queries, {name}" if name in WINDOWS else "one query, 30 d history"
            ratio = seconds / figures["seconds"]["1h"]
            self.stdout.write(f"{label:<22}{seconds * 1000:>10.1f}{ratio:>9.2f}×")
        self.stdout.write(
            "table sizes (MiB, indexes included): " + ", ".join(
                f"{name} {size / 2**20:,.1f}" for name, size in figures["table_bytes"].items()
            )
        )
        tiers = figures["tier_bytes_per_statement_day"]
        self.stdout.write(
            f"a statement-day costs {figures['bytes_per_statement_day']:,.1f} bytes while every "
            "tier keeps it (" + ", ".join(f"{name} {cost:,.1f}" for name, cost in tiers.items())
            + f"); at the retentions set, {figures['steady_bytes_per_statement']:,} bytes a "
            f"statement, steady; database growth {figures['bytes'] / 2**20:,.1f} MiB; rollup "
            f"totals equal to the raw ones: {figures['rollup_totals_equal']}"
        )


def best_of(repeat, answer):
    """The shortest of `repeat` timed calls, in seconds."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer()
        runs.append(time.perf_counter() - started)
    return min(runs)


def keep_baselines(queries, counters):
    """Each Query's baseline as the SQL-generated days left it, for store() to go on from."""
    Query.objects.bulk_update(
        [
            Query(pk=pk, **{f"last_{name}": each[name] for name in DELTA_COUNTERS})
            for pk, each in zip(queries, counters)
        ],
        [f"last_{name}" for name in DELTA_COUNTERS],
        batch_size=1000,
    )


def rollups_match_raw(database):
    """The last whole day summed from raw intervals, hourly and daily rollups, alike."""
    day = history.floor_day(timezone.now()) - timedelta(days=1)
    window = {"database": database}
    raw = QueryStat.objects.filter(taken_at__gte=day, taken_at__lt=day + timedelta(days=1),
                                   delta_calls__isnull=False, **window)
    sums = [
        raw.aggregate(calls=Sum("delta_calls"), total=Sum("delta_total_exec_time")),
        *(
            model.objects.filter(bucket__gte=day, bucket__lt=day + timedelta(days=1), **window)
            .aggregate(calls=Sum("calls"), total=Sum("total_exec_time"))
            for model in (HourlyStat, DailyStat)
        ),
    ]
    return (
        len({each["calls"] for each in sums}) == 1
        and max(each["total"] for each in sums) - min(each["total"] for each in sums)
        <= 1e-9 * max(each["total"] for each in sums)
    )


def table_size(model):
    """Bytes of `model`'s table with its indexes (and TOAST), partitions summed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_total_relation_size(%s::regclass) + coalesce(sum("
            "pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
            " WHERE inhparent = %s::regclass",
            [model._meta.db_table] * 2,
        )
        return int(cursor.fetchone()[0])


def held_days(model, field):
    """Days of history `model` holds, from its oldest row to now."""
    oldest = model.objects.order_by(field).values_list(field, flat=True).first()
    return max((timezone.now() - oldest) / timedelta(days=1), 1 / 24) if oldest else 1


def database_size():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return cursor.fetchone()[0]


@contextmanager
def scratch_app_database(name):
    """Point the default connection at a new database `name` (as Django's test runner does
    for its test database), then back, and drop it."""
    default = connections["default"]
    original = default.settings_dict["NAME"]
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE), autocommit=True) as maintenance:
        maintenance.execute(drop)
        maintenance.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    default.close()
    default.close_pool()
    default.settings_dict["NAME"] = name
    try:
        yield
    finally:
        default.close()
        default.close_pool()
        default.settings_dict["NAME"] = original
        with psycopg.connect(local_dsn(MAINTENANCE_DATABASE), autocommit=True) as maintenance:
            maintenance.execute(drop)
