"""Collection against real PostgreSQL with pg_stat_statements: snapshots, deltas, resets,
failing targets, and the DSN password kept out of everything shown."""

import io
import os

import psycopg
import pytest
from django.core.management import CommandError, call_command

from pganalytics.collector import MARKER, CollectionError, collect, collect_all
from pganalytics.models import MonitoredDatabase, Query, QueryStat, Snapshot
from pganalytics.signals import snapshot_collected
from pganalytics.targets import drop_database, local_dsn, reset_statements

LOOKUP = "SELECT count(*) FROM items WHERE id = %s"
RANGE = "SELECT id FROM items WHERE id > %s ORDER BY id LIMIT 3"
DOWN_DSN = "postgresql://monitor:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"


def run(connection, statement, times):
    for number in range(times):
        connection.execute(statement, [number])


def stat_of(snapshot, statement):
    """The QueryStat of the query whose representative text starts like `statement`."""
    prefix = statement.split("%s")[0]
    return QueryStat.objects.select_related("query").get(
        snapshot=snapshot, query__text__startswith=prefix
    )


def test_collection_stores_a_snapshot_with_one_stat_per_fingerprint(target, monitored):
    run(target, LOOKUP, 4)
    run(target, RANGE, 2)

    snapshot = collect(monitored)

    assert Snapshot.objects.filter(database=monitored).count() == 1
    assert snapshot.statement_count >= 2
    assert snapshot.duration_ms > 0
    assert snapshot.reset_detected is False
    lookup = stat_of(snapshot, LOOKUP)
    assert lookup.query.text == "SELECT count(*) FROM items WHERE id = $1"
    assert lookup.query.parsed is True
    assert len(lookup.query.fingerprint) == 16
    assert lookup.calls == 4
    assert lookup.rows == 4
    assert lookup.mean_exec_time == pytest.approx(lookup.total_exec_time / 4)
    assert lookup.min_exec_time <= lookup.mean_exec_time <= lookup.max_exec_time
    assert stat_of(snapshot, RANGE).calls == 2
    assert lookup.delta_calls is None and lookup.interval_seconds is None  # first snapshot
    monitored.refresh_from_db()
    assert monitored.last_collected_at == snapshot.taken_at
    assert monitored.last_error == ""


def test_the_collectors_own_statements_are_not_reported(target, monitored):
    collect(monitored)
    snapshot = collect(monitored)

    assert not Query.objects.filter(database=monitored, text__contains=MARKER).exists()
    assert snapshot.stats.count() == Query.objects.filter(database=monitored).count()


def test_deltas_between_snapshots_count_the_interval_only(target, monitored):
    run(target, LOOKUP, 1)
    collect(monitored)
    run(target, LOOKUP, 5)
    run(target, RANGE, 3)

    second = collect(monitored)
    run(target, LOOKUP, 2)
    third = collect(monitored)

    lookup = stat_of(second, LOOKUP)
    assert (lookup.calls, lookup.delta_calls, lookup.delta_rows) == (6, 5, 5)
    assert lookup.delta_total_exec_time > 0
    assert lookup.delta_mean_exec_time == pytest.approx(lookup.delta_total_exec_time / 5)
    assert lookup.interval_seconds > 0
    assert stat_of(second, RANGE).delta_calls == 3  # new in the interval: all of it counts
    assert stat_of(third, LOOKUP).delta_calls == 2
    assert stat_of(third, RANGE).delta_calls == 0
    assert not second.reset_detected and not third.reset_detected


def test_a_reset_of_the_database_statistics_is_detected_without_negative_deltas(
    target, monitored
):
    run(target, LOOKUP, 5)
    collect(monitored)
    reset_statements(target)
    run(target, LOOKUP, 2)

    after = collect(monitored)

    assert after.reset_detected is True
    lookup = stat_of(after, LOOKUP)
    assert (lookup.calls, lookup.delta_calls, lookup.delta_rows) == (2, 2, 2)
    assert not after.stats.filter(delta_calls__lt=0).exists()
    assert not after.stats.filter(delta_total_exec_time__lt=0).exists()


def test_a_changed_stats_reset_time_counts_every_query_from_zero(target, monitored):
    run(target, LOOKUP, 3)
    first = collect(monitored)
    # What a server-wide reset looks like: pg_stat_statements_info.stats_reset moved on.
    Snapshot.objects.filter(pk=first.pk).update(stats_reset="2000-01-01T00:00:00Z")
    run(target, LOOKUP, 1)

    after = collect(monitored)

    assert after.reset_detected is True
    assert stat_of(after, LOOKUP).delta_calls == 4


def test_a_down_target_fails_clearly_and_the_others_are_still_collected(target, monitored):
    down = MonitoredDatabase.objects.create(name="down", dsn=DOWN_DSN)

    with pytest.raises(CollectionError) as raised:
        collect(down)
    assert str(raised.value).startswith("down: cannot connect to ")
    assert "s3cret-pw" not in str(raised.value)

    results = dict(collect_all())
    assert isinstance(results[down], CollectionError)
    assert isinstance(results[monitored], Snapshot)
    down.refresh_from_db()
    assert down.last_error.startswith("down: cannot connect to postgresql://monitor:***@")
    assert "s3cret-pw" not in down.last_error
    assert not Snapshot.objects.filter(database=down).exists()


def test_collect_all_skips_disabled_databases_and_can_name_one(target, monitored):
    MonitoredDatabase.objects.create(name="paused", dsn=DOWN_DSN, enabled=False)

    assert [database.name for database, _ in collect_all()] == ["target"]
    assert collect_all("paused") == []


def test_a_database_without_the_extension_fails_clearly(db):
    name = f"pganalytics_bare_{os.environ.get('PYTEST_DB_SUFFIX', 'main')}_{os.getpid()}"
    with psycopg.connect(local_dsn("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        bare = MonitoredDatabase.objects.create(name="bare", dsn=local_dsn(name))
        with pytest.raises(CollectionError, match="pg_stat_statements is not installed"):
            collect(bare)
    finally:
        drop_database(name)


def test_snapshot_collected_is_sent_after_commit(
    target, monitored, django_capture_on_commit_callbacks
):
    received = []

    def receiver(sender, snapshot, **kwargs):
        received.append(snapshot)

    snapshot_collected.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            snapshot = collect(monitored)
            assert received == []
    finally:
        snapshot_collected.disconnect(receiver)
    assert received == [snapshot]


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://monitor:s3cret-pw@db.example:5432/app",
        "postgresql://monitor@db.example/app?password=s3cret-pw&sslmode=require",
        "host=db.example user=monitor password=s3cret-pw dbname=app",
        "host=db.example password='s3cret-pw' dbname=app",
    ],
)
def test_the_password_is_masked_in_str_and_masked_dsn(dsn):
    database = MonitoredDatabase(name="app", dsn=dsn)

    assert "s3cret-pw" not in str(database)
    assert "s3cret-pw" not in database.masked_dsn
    assert "***" in database.masked_dsn
    assert "db.example" in database.masked_dsn


def test_the_admin_never_renders_the_password_and_keeps_it_when_left_empty(admin_client):
    database = MonitoredDatabase.objects.create(name="app", dsn=DOWN_DSN)
    url = f"/admin/pganalytics/monitoreddatabase/{database.pk}/change/"

    page = admin_client.get(url).content.decode()
    listing = admin_client.get("/admin/pganalytics/monitoreddatabase/").content.decode()
    assert "s3cret-pw" not in page and "s3cret-pw" not in listing
    assert "postgresql://monitor:***@127.0.0.1:1/nowhere" in page

    response = admin_client.post(url, {"name": "app", "dsn": "", "enabled": "on"})
    assert response.status_code == 302
    database.refresh_from_db()
    assert database.dsn == DOWN_DSN

    admin_client.post(url, {"name": "app", "dsn": "host=elsewhere password=new-pw", "enabled": ""})
    database.refresh_from_db()
    assert (database.dsn, database.enabled) == ("host=elsewhere password=new-pw", False)


def test_the_admin_collect_action_reports_failures_without_the_password(admin_client):
    database = MonitoredDatabase.objects.create(name="down", dsn=DOWN_DSN)

    response = admin_client.post(
        "/admin/pganalytics/monitoreddatabase/",
        {"action": "collect_now", "_selected_action": [database.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert "down: cannot connect to" in page
    assert "s3cret-pw" not in page


def test_the_collect_command_reports_each_database_and_fails_if_one_did(target, monitored):
    MonitoredDatabase.objects.create(name="down", dsn=DOWN_DSN)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="1 database"):
        call_command("collect", stdout=out, stderr=err)

    assert out.getvalue().startswith("ok target: ")
    assert err.getvalue().startswith("FAILED down: cannot connect to ")
    assert "s3cret-pw" not in err.getvalue()
    call_command("collect", "--database", "target", stdout=out, stderr=err)
    assert Snapshot.objects.filter(database=monitored).count() == 2
    with pytest.raises(CommandError, match="no enabled monitored database named 'nope'"):
        call_command("collect", "--database", "nope")
    with pytest.raises(CommandError, match="--every 'soon'"):
        call_command("collect", "--every", "soon")
