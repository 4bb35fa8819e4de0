"""Collection against real PostgreSQL with pg_stat_statements: snapshots, deltas, resets,
failing targets, concurrent and limited collectors, the collect command, and the DSN
password kept out of everything shown."""

import io
import os
import re
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from psycopg import conninfo, sql

from pganalytics import targets
from pganalytics.analytics import collector, services
from pganalytics.analytics.collector import (
    HIDDEN_TEXT,
    MARKER,
    CollectionError,
    collect,
    collect_all,
)
from pganalytics.analytics.explain import explain
from pganalytics.models import MonitoredDatabase, Query, QueryStat, Snapshot
from pganalytics.signals import snapshot_collected
from pganalytics.targets import MAINTENANCE_DATABASE, drop_database, local_dsn, reset_statements
from tests.conftest import child_environment

LOOKUP = "SELECT count(*) FROM items WHERE id = %s"
RANGE = "SELECT id FROM items WHERE id > %s ORDER BY id LIMIT 3"
OWN = "SELECT current_user AS own_statement, %s::int"
DOWN_DSN = "postgresql://monitor:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"
SESSION = f"{os.environ.get('PYTEST_DB_SUFFIX', 'main')}_{os.getpid()}"


def run(connection, statement, times):
    for number in range(times):
        connection.execute(statement, [number])


@contextmanager
def scratch_database(kind, options=""):
    """The name of a new database on the app's server (CREATE DATABASE `options`), dropped after."""
    name = f"pganalytics_{kind}_{SESSION}"
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE), autocommit=True) as maintenance:
        maintenance.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 {options}')
    try:
        yield name
    finally:
        drop_database(name)


@pytest.fixture
def limited_role():
    """A login role without pg_read_all_stats: other roles' statements are hidden from it."""
    role = f"pganalytics_limited_{SESSION}"
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE), autocommit=True) as maintenance:
        maintenance.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        yield role
        maintenance.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def manage(*arguments):
    """`manage.py *arguments` started in its own process, on this test's database."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *arguments],
        cwd=settings.BASE_DIR,
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    assert snapshot.stats.count() == 0  # nothing ran in between: nothing moved, nothing stored


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
    with pytest.raises(QueryStat.DoesNotExist):  # it did not move: not stored
        stat_of(third, RANGE)
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
    with scratch_database("bare") as name:
        bare = MonitoredDatabase.objects.create(name="bare", dsn=local_dsn(name))
        with pytest.raises(CollectionError, match="pg_stat_statements is not installed"):
            collect(bare)


def test_a_sql_ascii_database_is_collected(db):
    options = "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
    with scratch_database("ascii", options) as name:
        with psycopg.connect(local_dsn(name), autocommit=True) as ascii_target:
            try:
                ascii_target.execute("CREATE EXTENSION pg_stat_statements")
                ascii_target.execute("CREATE TABLE items (id int PRIMARY KEY)")
                run(ascii_target, LOOKUP, 3)
                # A Latin-1 byte in the text itself (constants are normalised away).
                ascii_target.execute(b'SELECT count(*) AS "caf\xe9" FROM items')
                database = MonitoredDatabase.objects.create(name="ascii", dsn=local_dsn(name))

                snapshot = collect(database)

                assert stat_of(snapshot, LOOKUP).calls == 3
                latin = stat_of(snapshot, "SELECT count(*) AS")
                assert latin.query.text == 'SELECT count(*) AS "caf\ufffd" FROM items'
                query = stat_of(snapshot, LOOKUP).query
                plan = explain(database.dsn, query.text, userid=query.userid)
                assert plan.summary.node_types
            finally:
                # Its texts are read by every database's pg_stat_statements: none may stay.
                reset_statements(ascii_target)


def test_the_queryid_is_stored_and_the_rows_of_one_fingerprint_are_summed(target, monitored):
    # IN lists of other lengths: one fingerprint for pg_query, two queryids for PostgreSQL.
    for _ in range(3):
        target.execute("SELECT count(*) FROM items WHERE id IN (%s, %s)", [1, 2])
    target.execute("SELECT count(*) FROM items WHERE id IN (%s, %s, %s)", [1, 2, 3])
    most_called = "SELECT count(*) FROM items WHERE id IN ($1, $2)"
    queryid = target.execute(
        "SELECT queryid FROM pg_stat_statements WHERE query = %s", [most_called]
    ).fetchone()[0]

    snapshot = collect(monitored)

    stat = stat_of(snapshot, "SELECT count(*) FROM items WHERE id IN (%s")
    assert (stat.calls, stat.queryid, stat.query.text) == (4, queryid, most_called)


def test_hidden_statements_of_other_roles_are_left_out_and_reported(
    target, target_name, monitored, limited_role, admin_client
):
    run(target, LOOKUP, 3)  # as the app's role: hidden from the limited one
    dsn = conninfo.make_conninfo(local_dsn(target_name), user=limited_role)
    with psycopg.connect(dsn, autocommit=True) as own:
        run(own, OWN, 2)
    limited = MonitoredDatabase.objects.create(name="limited", dsn=dsn)

    snapshot = collect(limited)

    assert not Query.objects.filter(database=limited, text=HIDDEN_TEXT).exists()
    assert stat_of(snapshot, OWN).calls == 2
    assert re.fullmatch(
        rf'\d+ statements? of other roles hidden: GRANT pg_read_all_stats TO "{limited_role}"',
        snapshot.warning,
    )
    listed = {database.name: database for database in services.databases()}
    summary = services.database_summary(listed["limited"], User(is_staff=True))
    assert summary["warning"] == snapshot.warning
    page = admin_client.post(
        "/admin/pganalytics/monitoreddatabase/",
        {"action": "collect_now", "_selected_action": [limited.pk]},
        follow=True,
    ).content.decode()
    assert f"GRANT pg_read_all_stats TO &quot;{limited_role}&quot;" in page
    assert collect(monitored).warning == ""  # the app's role is a superuser: sees them all


@pytest.mark.django_db(transaction=True)
def test_a_reading_overtaken_by_a_newer_snapshot_is_dropped_not_stored_out_of_order(
    target, monitored, monkeypatch
):
    """The admin's "Collect now" overlapping `collect --every`: the first reading waits until
    the second collection is stored. Stored after it, it would make a negative interval and
    a false reset; it is dropped instead, and the newer snapshot counts its calls."""
    run(target, LOOKUP, 1)
    collect(monitored)
    run(target, LOOKUP, 2)
    read = collector.read_statements
    first_read, second_stored = threading.Event(), threading.Event()

    def read_statements(database):
        reading = read(database)
        if not first_read.is_set():
            first_read.set()
            assert second_stored.wait(timeout=20)
        return reading

    def second():
        first_read.wait(timeout=10)
        run(target, LOOKUP, 3)
        snapshot = collect(monitored)
        second_stored.set()
        return snapshot

    def with_own_connection(function):
        try:
            return function()
        finally:
            connection.close()

    monkeypatch.setattr(collector, "read_statements", read_statements)
    with ThreadPoolExecutor(max_workers=2) as threads:
        overtaken = threads.submit(with_own_connection, lambda: collect(monitored))
        later = threads.submit(with_own_connection, second).result(timeout=30)
        with pytest.raises(CollectionError, match="this older reading is dropped"):
            overtaken.result(timeout=30)

    assert Snapshot.objects.filter(database=monitored).count() == 2
    assert not later.reset_detected
    assert not QueryStat.objects.filter(interval_seconds__lte=0).exists()
    assert stat_of(later, LOOKUP).delta_calls == 5  # the dropped reading's 2 calls, then 3


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


def test_connections_to_targets_give_up_on_a_silent_network_unless_the_dsn_says(target_name):
    with targets.connect(local_dsn(target_name)) as connection:
        settings = {option.keyword.decode(): option.val for option in connection.pgconn.info}
        assert connection.execute("SELECT 'ok'").fetchone()[0] == "ok"
    assert {key: settings[key] for key in targets.KEEPALIVES} == {
        key: str(value).encode() for key, value in targets.KEEPALIVES.items()
    }
    assert settings["connect_timeout"] == str(targets.CONNECT_TIMEOUT_SECONDS).encode()
    own = conninfo.make_conninfo(local_dsn(target_name), connect_timeout=2, keepalives=0)
    with targets.connect(own) as connection:
        settings = {option.keyword.decode(): option.val for option in connection.pgconn.info}
    assert (settings["connect_timeout"], settings["keepalives"]) == (b"2", b"0")


def test_the_admin_refuses_a_url_whose_password_holds_a_bare_at_sign(admin_client):
    url = "/admin/pganalytics/monitoreddatabase/add/"
    response = admin_client.post(
        url, {"name": "at", "dsn": "postgresql://u:pa@ss@127.0.0.1/x", "enabled": "on"}
    )
    page = response.content.decode()
    assert response.status_code == 200 and "write an &quot;@&quot;" in page and "pa@ss" not in page
    response = admin_client.post(
        url, {"name": "at", "dsn": "postgresql://u:pa%40ss@127.0.0.1/x", "enabled": "on"}
    )
    assert response.status_code == 302
    assert MonitoredDatabase.objects.get(name="at").dsn == "postgresql://u:pa%40ss@127.0.0.1/x"


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


def test_an_unexpected_error_fails_its_database_only(
    target, monitored, monkeypatch, admin_client
):
    broken = MonitoredDatabase.objects.create(name="broken", dsn=monitored.dsn)
    read = collector.read_statements

    def read_statements(database):
        if database.name == "broken":
            raise RuntimeError("a bug,\n on two lines")
        return read(database)

    monkeypatch.setattr(collector, "read_statements", read_statements)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="1 database"):
        call_command("collect", stdout=out, stderr=err)

    assert err.getvalue() == "FAILED broken: unexpected RuntimeError: a bug, on two lines\n"
    assert out.getvalue().startswith("ok target: ")
    page = admin_client.post(
        "/admin/pganalytics/monitoreddatabase/",
        {"action": "collect_now", "_selected_action": [broken.pk, monitored.pk]},
        follow=True,
    ).content.decode()
    assert "Broken: unexpected RuntimeError: a bug, on two lines" in page  # the admin capitalises
    assert "Target: snapshot of " in page


@pytest.mark.django_db(transaction=True)
def test_a_single_run_exits_0_with_a_warning_and_1_when_a_database_failed(
    target, target_name, limited_role
):
    run(target, LOOKUP, 1)  # hidden from the limited role
    dsn = conninfo.make_conninfo(local_dsn(target_name), user=limited_role)
    MonitoredDatabase.objects.create(name="limited", dsn=dsn)

    warning = r"ok limited: .* \(\d+ statements? of other roles hidden: GRANT pg_read_all_stats TO "
    succeeding = manage("collect")
    out, err = succeeding.communicate(timeout=60)
    assert succeeding.returncode == 0, err
    assert re.match(warning, out) and err == ""

    MonitoredDatabase.objects.create(name="down", dsn=DOWN_DSN)
    failing = manage("collect")
    out, err = failing.communicate(timeout=60)
    assert failing.returncode == 1
    assert err.startswith("FAILED down: cannot connect to ")
    assert re.match(warning, out)


@pytest.mark.django_db(transaction=True)
def test_collect_every_goes_on_through_failures_until_terminated(target, target_name):
    looping = manage("collect", "--every", "1s")
    try:
        assert select.select([looping.stderr], [], [], 60)[0], "collect said nothing in 60 s"
        assert looping.stderr.readline().startswith("nothing to collect: none enabled")
        MonitoredDatabase.objects.create(name="down", dsn=DOWN_DSN)
        working = MonitoredDatabase.objects.create(name="target", dsn=local_dsn(target_name))
        deadline = time.monotonic() + 30
        while working.snapshots.count() < 3 and time.monotonic() < deadline:
            assert looping.poll() is None
            time.sleep(0.2)
    finally:
        looping.terminate()
        out, err = looping.communicate(timeout=30)

    assert working.snapshots.count() >= 3
    assert err.count("FAILED down: cannot connect to ") >= 2
    assert out.count("ok target: ") >= 3 and out.endswith("collect: stopped\n")
    assert looping.returncode == 0
