"""History at scale: only what moved is stored (and the pages answer as if everything was),
rollups sum to the raw totals for any window of whole buckets, across a statistics reset,
retention drops whole partitions and keeps the rollups, compactions exclude each other, and
the migration carries an existing history over."""

import os
import random
import subprocess
import sys
import time
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from pganalytics.analytics import history, services
from pganalytics.analytics.collector import COUNTERS, CollectionError, Reading, collect, store
from pganalytics.models import (
    DailyStat,
    HourlyStat,
    MonitoredDatabase,
    PlanSample,
    Query,
    QueryStat,
    Snapshot,
)
from pganalytics.targets import MAINTENANCE_DATABASE, drop_database, local_dsn
from tests.conftest import child_environment

STATEMENTS = {
    "lookup": "SELECT count(*) FROM items WHERE id = %s",
    "scan": "SELECT count(*) FROM items WHERE id > %s",
    "rare": "SELECT max(id) FROM items WHERE id < %s",
}


def test_only_what_moved_is_stored_and_the_pages_answer_as_if_everything_was(
    target, target_name, monitored
):
    """The reference: every statement's calls per interval, read straight from the server."""
    rng = random.Random(7)
    reference = {name: [] for name in STATEMENTS}
    last = dict.fromkeys(STATEMENTS, 0)

    def server_calls():
        with psycopg.connect(local_dsn(target_name), autocommit=True) as reader:
            return {
                name: reader.execute(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
                    " WHERE query = %s AND dbid = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())",
                    [statement.replace("%s", "$1")],
                ).fetchone()[0]
                for name, statement in STATEMENTS.items()
            }

    for name, statement in STATEMENTS.items():
        target.execute(statement, [1])  # every statement is known from the first snapshot
    collect(monitored)
    last = server_calls()
    ours = Query.objects.filter(text__in=[text.replace("%s", "$1") for text in STATEMENTS.values()])
    stored = 0
    for _ in range(12):
        for name, statement in STATEMENTS.items():
            if name == "lookup" or rng.random() < 0.4:  # the others idle in most intervals
                for number in range(rng.randint(1, 5)):
                    target.execute(statement, [number])
        snapshot = collect(monitored)
        now = server_calls()
        for name in STATEMENTS:
            reference[name].append(now[name] - last[name])
        last = now
        stored += snapshot.stats.filter(query__in=ours).count()

    assert stored == sum(1 for calls in reference.values() for moved in calls if moved)
    assert stored < 12 * len(STATEMENTS)  # idle intervals were left out
    for name, statement in STATEMENTS.items():
        query = Query.objects.get(database=monitored, text=statement.replace("%s", "$1"))
        detail = services.query_detail(monitored, query.fingerprint)
        assert [point["calls"] for point in detail["history"]] == reference[name]
        idle = [point for point in detail["history"] if point["calls"] == 0]
        assert all(point["mean_ms"] is None and point["interval_seconds"] > 0 for point in idle)
    rows = services.top_queries(monitored, window=timedelta(hours=1))
    top = {row.text: row.calls for row in rows}
    for name, statement in STATEMENTS.items():
        assert top[statement.replace("%s", "$1")] == sum(reference[name])


def reading_at(moment, cumulative, stats_reset):
    """A Reading of the statements in `cumulative` ({text: calls}), 2 ms and 3 rows per call."""
    rows = []
    for text, calls in cumulative.items():
        counters = dict.fromkeys(COUNTERS, 0)
        counters.update(calls=calls, total_exec_time=2.0 * calls, mean_exec_time=2.0,
                        rows=3 * calls, shared_blks_hit=calls)
        rows.append((text, 10, hash(text), *(counters[name] for name in COUNTERS)))
    return Reading(taken_at=moment, stats_reset=stats_reset, rows=rows)


@pytest.fixture
def three_days(db, settings):
    """Three days of synthetic snapshots every 20 minutes, a statistics reset on day two."""
    settings.RAW_RETENTION = timedelta(days=30)
    database = MonitoredDatabase.objects.create(name="synthetic", dsn="host=127.0.0.1 port=1")
    rng = random.Random(11)
    texts = [f"SELECT {name} FROM t WHERE id = $1" for name in ("a", "b", "c", "d")]
    start = history.floor_day(timezone.now()) - timedelta(days=3)
    cumulative, stats_reset = dict.fromkeys(texts, 0), start - timedelta(days=1)
    for step in range(3 * 72):
        moment = start + step * timedelta(minutes=20) + timedelta(seconds=7)
        if step == 100:
            cumulative, stats_reset = dict.fromkeys(texts, 0), moment
        for text in texts:
            if rng.random() < 0.5:
                cumulative[text] += rng.randint(1, 40)
        store(database, reading_at(moment, cumulative, stats_reset), started=0.0)
    return database, start


def raw_sum(database, start, end):
    return QueryStat.objects.filter(
        database=database, taken_at__gte=start, taken_at__lt=end
    ).aggregate(calls=Sum("delta_calls"), total=Sum("delta_total_exec_time"))


def rollup_sum(model, database, start, end):
    return model.objects.filter(
        database=database, bucket__gte=start, bucket__lt=end
    ).aggregate(calls=Sum("calls"), total=Sum("total_exec_time"))


def test_rollups_sum_to_the_raw_totals_for_any_window_of_whole_buckets(three_days):
    database, start = three_days
    done = history.compact(now=start + timedelta(days=3, minutes=30))
    assert done.hourly_to == done.daily_to == start + timedelta(days=3)
    assert Snapshot.objects.filter(database=database, reset_detected=True).count() == 1

    rng = random.Random(3)
    for _ in range(20):
        first, last = sorted(rng.sample(range(0, 71), 2))
        hours = (start + timedelta(hours=first), start + timedelta(hours=last))
        assert rollup_sum(HourlyStat, database, *hours) == pytest.approx(raw_sum(database, *hours))
    for first, last in [(0, 1), (0, 2), (1, 2)]:
        days = (start + timedelta(days=first), start + timedelta(days=last))
        expected = raw_sum(database, *days)
        assert expected["calls"] > 0
        assert rollup_sum(DailyStat, database, *days) == pytest.approx(expected)
        assert rollup_sum(HourlyStat, database, *days) == pytest.approx(expected)

    again = history.compact(now=start + timedelta(days=3, minutes=30))
    assert (again.hours, again.days) == (0, 0)  # nothing new: idempotent


def window_sum(database, span):
    totals, params = history.window_totals(database.id, span)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT sum(calls), sum(total_exec_time) FROM ({totals}) t", params)
        return cursor.fetchone()


def test_a_window_of_hours_reads_whole_hours_rolled_up_and_its_ends_raw(three_days):
    database, start = three_days
    now = start + timedelta(days=3, minutes=30)
    history.compact(now=now)
    window = timedelta(hours=20, minutes=13)

    span = history.span(window, now=now)

    assert (span.start, span.head_until) == (now - window, history.floor_hour(now - window)
                                             + timedelta(hours=1))
    assert span.hourly_until == start + timedelta(days=3)  # the hours rolled up so far
    calls, total_ms = window_sum(database, span)
    expected = raw_sum(database, now - window, now + timedelta(hours=1))
    assert (calls, total_ms) == (expected["calls"], pytest.approx(expected["total"]))


def test_a_long_window_reads_the_rollups_and_sums_the_same(three_days, settings):
    database, start = three_days
    now = start + timedelta(days=3, minutes=30)
    history.compact(now=now)
    settings.RAW_RETENTION = timedelta(days=1)
    window = timedelta(days=2, hours=5)

    span = history.span(window, now=now)
    assert span.resolution == "daily" and span.start == history.floor_day(now - window)
    assert history.span(window, now=now, chart=True).resolution == "hourly"
    calls, total_ms = window_sum(database, span)
    expected = raw_sum(database, span.start, now + timedelta(hours=1))
    assert (calls, total_ms) == (expected["calls"], pytest.approx(expected["total"]))


def test_retention_drops_whole_partitions_and_keeps_the_rollups(three_days, settings):
    database, start = three_days
    everything = raw_sum(database, start, start + timedelta(days=4))
    settings.RAW_RETENTION = timedelta(days=1)
    settings.HOURLY_RETENTION = timedelta(days=2)
    now = start + timedelta(days=3, minutes=30)

    done = history.compact(now=now)

    assert done.dropped_raw == [start, start + timedelta(days=1)]
    assert set(history.partitions(QueryStat)) >= {start + timedelta(days=2)}
    assert QueryStat.objects.filter(database=database).earliest("taken_at").taken_at >= (
        start + timedelta(days=2)
    )
    assert done.dropped_hourly == [start]
    assert not HourlyStat.objects.filter(bucket__lt=start + timedelta(days=1)).exists()
    kept = (
        rollup_sum(DailyStat, database, start, start + timedelta(days=2))["calls"]
        + raw_sum(database, start + timedelta(days=2), now)["calls"]
    )
    assert kept == everything["calls"]  # nothing lost: days in DailyStat, the rest raw
    newest = Snapshot.objects.filter(database=database).latest("taken_at")
    assert Snapshot.objects.filter(database=database).earliest("taken_at").taken_at >= (
        start + timedelta(days=1)
    )
    assert newest.taken_at > now - timedelta(hours=1)


def test_plans_are_kept_as_long_as_the_daily_rows_and_each_statements_newest_before(
    three_days, settings
):
    database, start = three_days
    settings.DAILY_RETENTION = timedelta(days=2)
    first, second = Query.objects.filter(database=database).order_by("pk")[:2]
    hours = {first: (1, 5, 30, 60), second: (2,)}  # after the start: the cutoff is at 24
    for query, taken in hours.items():
        PlanSample.objects.bulk_create(
            PlanSample(query=query, database=database, taken_at=start + timedelta(hours=hour),
                       plan_seq_scans=0.0, plan_total_cost=float(hour), plan_rows=1.0)
            for hour in taken)

    done = history.compact(now=start + timedelta(days=3, minutes=30))

    kept = PlanSample.objects.order_by("query_id", "taken_at")
    assert [(sample.query_id, sample.plan_total_cost) for sample in kept] == [
        (first.pk, 5.0), (first.pk, 30.0), (first.pk, 60.0), (second.pk, 2.0)]
    assert done.deleted_plans == 1


def test_a_reading_in_an_hour_already_rolled_up_is_dropped(three_days):
    database, start = three_days
    history.compact(now=start + timedelta(days=3, minutes=30))
    late = reading_at(start + timedelta(days=2, hours=23, minutes=59), {"SELECT 1": 5}, None)
    with pytest.raises(CollectionError, match="already rolled up: it is dropped"):
        store(database, late, started=0.0)


@pytest.mark.django_db(transaction=True)
def test_a_compaction_finding_another_at_work_does_nothing(target, monitored):
    collect(monitored)
    with psycopg.connect(local_dsn(connection.settings_dict["NAME"]), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [history.COMPACTION_LOCK])
        assert history.compact().skipped
        other.execute("SELECT pg_advisory_unlock(%s)", [history.COMPACTION_LOCK])
    assert not history.compact().skipped
    runs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "compact"], cwd=django_settings.BASE_DIR,
            env=child_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    for run in runs:
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0 and out.startswith("compact: "), err


OLD_ROWS = """
INSERT INTO pganalytics_monitoreddatabase (id, name, dsn, enabled, created_at, last_error,
    updated_at) VALUES (1, 'old', 'host=127.0.0.1 port=1', true, now(), '', now());
INSERT INTO pganalytics_query (id, database_id, fingerprint, text, normalized, parsed,
    first_seen, last_seen) VALUES
    (1, 1, 'aaaaaaaaaaaaaaaa', 'SELECT 1', 'SELECT $1', true, now(), now()),
    (2, 1, 'bbbbbbbbbbbbbbbb', 'SELECT 2', 'SELECT $1', true, now(), now());
INSERT INTO pganalytics_snapshot (id, database_id, taken_at, statement_count, reset_detected,
    duration_ms, warning) VALUES
    (1, 1, '2026-01-01 23:50+00', 2, false, 1, ''),
    (2, 1, '2026-01-02 00:10+00', 2, false, 1, ''),
    (3, 1, '2026-01-02 00:30+00', 2, false, 1, '');
INSERT INTO pganalytics_querystat (snapshot_id, query_id, calls, total_exec_time,
    min_exec_time, max_exec_time, mean_exec_time, stddev_exec_time, rows, shared_blks_hit,
    shared_blks_read, plans, total_plan_time, interval_seconds, delta_calls,
    delta_total_exec_time, delta_mean_exec_time, delta_rows, delta_shared_blks_hit,
    delta_shared_blks_read) VALUES
    (1, 1, 5, 10, 1, 3, 2, 0, 5, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (1, 2, 7, 7, 1, 1, 1, 0, 7, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (2, 1, 9, 18, 1, 3, 2, 0, 9, 0, 0, 0, 0, 1200, 4, 8, 2, 4, 0, 0),
    (2, 2, 7, 7, 1, 1, 1, 0, 7, 0, 0, 0, 0, 1200, 0, 0, 0, 0, 0, 0),
    (3, 1, 9, 18, 1, 3, 2, 0, 9, 0, 0, 0, 0, 1200, 0, 0, 0, 0, 0, 0),
    (3, 2, 8, 8, 1, 1, 1, 0, 8, 0, 0, 0, 0, 1200, 1, 1, 1, 1, 0, 0);
"""


@pytest.fixture
def old_database():
    """A scratch app database migrated as far as before partitioning, holding a history."""
    name = f"pganalytics_migrate_{os.environ.get('PYTEST_DB_SUFFIX', 'main')}_{os.getpid()}"
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE), autocommit=True) as maintenance:
        maintenance.execute(f'DROP DATABASE IF EXISTS "{name}"')
        maintenance.execute(f'CREATE DATABASE "{name}"')
    environment = {**child_environment(), "DATABASE_URL": f"postgres://localhost/{name}"}
    yield name, environment
    drop_database(name)


def migrate(environment, *target):
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", *target], cwd=django_settings.BASE_DIR,
        env=environment, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_the_migration_carries_an_existing_history_over(old_database):
    name, environment = old_database
    migrate(environment, "pganalytics", "0006")
    with psycopg.connect(local_dsn(name), autocommit=True) as app:
        app.execute(OLD_ROWS)

    migrate(environment)

    with psycopg.connect(local_dsn(name), autocommit=True) as app:
        partitions = app.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'pganalytics_querystat'::regclass ORDER BY 1"
        ).fetchall()
        rows = app.execute(
            "SELECT snapshot_id, query_id, taken_at = (SELECT taken_at FROM pganalytics_snapshot"
            " WHERE id = snapshot_id), database_id, delta_calls FROM pganalytics_querystat"
            " ORDER BY 1, 2"
        ).fetchall()
        baselines = app.execute(
            "SELECT id, last_calls, last_total_exec_time FROM pganalytics_query ORDER BY id"
        ).fetchall()
    assert partitions == [
        ("pganalytics_querystat_p20260101",), ("pganalytics_querystat_p20260102",)
    ]
    # the first snapshot's rows, and those that moved: (2, 2) and (3, 1) did not
    assert rows == [(1, 1, True, 1, None), (1, 2, True, 1, None), (2, 1, True, 1, 4),
                    (3, 2, True, 1, 1)]
    assert baselines == [(1, 9, 18.0), (2, 8, 8.0)]


def test_a_long_history_is_drawn_per_hour_or_day_and_sums_the_same(three_days, settings, client):
    database, start = three_days
    history.compact(now=start + timedelta(days=3, minutes=30))
    settings.RAW_RETENTION = timedelta(days=1)
    query = Query.objects.filter(database=database).first()
    query.userid = None  # no plan: the test is about the history
    query.save()

    hourly = services.query_detail(database, query.fingerprint, timedelta(days=7))
    daily = services.query_detail(database, query.fingerprint, timedelta(days=60))

    assert (hourly["resolution"], daily["resolution"]) == ("hourly", "daily")
    every = QueryStat.objects.filter(query=query).aggregate(calls=Sum("delta_calls"))["calls"]
    for detail, points in ((hourly, 72), (daily, 4)):
        assert len(detail["history"]) <= points
        assert sum(point["calls"] for point in detail["history"]) == every
    assert len(services.query_detail(database, query.fingerprint)["history"]) <= 49


def test_the_query_page_marks_an_interval_with_evictions(target, monitored, admin_client):
    for _ in range(3):
        target.execute(STATEMENTS["lookup"], [1])
        collect(monitored)
    newest = monitored.snapshots.latest()
    # the server is shared: other work may really evict entries meanwhile; only this one counts
    monitored.snapshots.update(evicted=0)
    Snapshot.objects.filter(pk=newest.pk).update(evicted=2)
    query = Query.objects.get(database=monitored, text=STATEMENTS["lookup"].replace("%s", "$1"))

    points = services.query_detail(monitored, query.fingerprint)["history"]

    assert [point["evicted"] for point in points] == [0, 2]
    page = admin_client.get(f"/databases/{monitored.id}/queries/{query.fingerprint}/")
    assert "evicted entries 2 times in this interval" in page.content.decode()


def test_old_days_go_but_each_statement_keeps_the_running_totals_a_window_starts_from(
    three_days, settings
):
    database, start = three_days
    now = start + timedelta(days=3, minutes=30)
    settings.DAILY_RETENTION = timedelta(days=1)

    history.compact(now=now)

    kept = DailyStat.objects.filter(database=database).values_list("query_id", "bucket")
    for query_id in Query.objects.filter(database=database).values_list("pk", flat=True):
        days = sorted(bucket for each, bucket in kept if each == query_id)
        assert days[0] >= start + timedelta(days=1) and days[-1] == start + timedelta(days=2)
    last_day = history.Span(*[start + timedelta(days=2)] * 2, start + timedelta(days=3),
                            start + timedelta(days=3), "daily")
    calls, total_ms = window_sum(database, last_day)
    expected = raw_sum(database, start + timedelta(days=2), now + timedelta(hours=1))
    assert (calls, total_ms) == (expected["calls"], pytest.approx(expected["total"]))


def test_a_statement_reset_on_its_own_counts_from_zero_when_it_comes_back(target, monitored):
    lookup = STATEMENTS["lookup"]
    for times in (10, 5):
        for number in range(times):
            target.execute(lookup, [number])
        collect(monitored)
    target.execute(
        "SELECT pg_stat_statements_reset(userid, dbid, queryid) FROM pg_stat_statements"
        " WHERE query = %s", [lookup.replace("%s", "$1")]
    )
    collect(monitored)  # the statement is gone from the server: it did not move
    for number in range(100):
        target.execute(lookup, [number])
    collect(monitored)

    query = Query.objects.get(database=monitored, text=lookup.replace("%s", "$1"))
    calls = [point["calls"] for point in services.query_detail(monitored, query.fingerprint)[
        "history"]]
    assert calls == [5, 0, 100]  # the 100 after its reset, not 100 less the 15 before


@pytest.mark.django_db(transaction=True)  # the reader must see the history: committed
def test_retention_gives_way_to_a_long_reader_instead_of_queueing_everyone_behind_it(
    three_days, settings
):
    database, start = three_days
    now = start + timedelta(days=3, minutes=30)
    settings.RAW_RETENTION = timedelta(days=1)
    with psycopg.connect(local_dsn(connection.settings_dict["NAME"])) as reader:
        reader.execute("SELECT count(*) FROM pganalytics_querystat")  # a backup, say: open

        started = time.monotonic()
        done = history.compact(now=now)
        waited = time.monotonic() - started

    assert done.dropped_raw == [] and waited < 10  # 1 s lock_timeouts, then on
    assert history.compact(now=now).dropped_raw == [start, start + timedelta(days=1)]


def test_a_window_longer_than_the_daily_retention_starts_where_the_history_kept_does(
    three_days, settings
):
    database, start = three_days
    now = start + timedelta(days=3, minutes=30)
    history.compact(now=now)
    settings.RAW_RETENTION = timedelta(days=1)
    settings.DAILY_RETENTION = timedelta(days=2)

    span = history.span(timedelta(days=400), now=now)

    assert span.start == start + timedelta(days=1)  # not the statements' whole history
    calls, _ = window_sum(database, span)
    assert calls == raw_sum(database, start + timedelta(days=1), now + timedelta(hours=1))["calls"]


def test_a_database_deleted_in_the_admin_takes_its_history_along_set_wise(
    three_days, admin_client
):
    database, start = three_days
    history.compact(now=start + timedelta(days=3, minutes=30))
    url = f"/admin/pganalytics/monitoreddatabase/{database.pk}/delete/"

    confirm = admin_client.get(url).content.decode()
    assert "216 snapshots and 4 queries, with their history" in confirm
    assert admin_client.post(url, {"post": "yes"}).status_code == 302

    assert not MonitoredDatabase.objects.filter(pk=database.pk).exists()
    for model in (QueryStat, HourlyStat, DailyStat, Snapshot, Query):
        assert not model.objects.filter(database_id=database.pk).exists(), model


def test_the_migration_goes_back_with_a_baseline_row_for_every_statement(old_database):
    name, environment = old_database
    migrate(environment, "pganalytics", "0006")
    with psycopg.connect(local_dsn(name), autocommit=True) as app:
        app.execute(OLD_ROWS)
    migrate(environment)

    migrate(environment, "pganalytics", "0006")

    with psycopg.connect(local_dsn(name), autocommit=True) as app:
        rows = app.execute(
            "SELECT snapshot_id, query_id, calls FROM pganalytics_querystat ORDER BY 1, 2"
        ).fetchall()
    # what was kept, and the statement that did not move in the newest snapshot, at its baseline
    assert rows == [(1, 1, 5), (1, 2, 7), (2, 1, 9), (3, 1, 9), (3, 2, 8)]
