"""Many monitored databases: `collect --concurrency`, claims shared by several collector
processes (never one database twice in a period), a hung target costing only its own
timeout, and the collection lag on the database list."""

import io
import re
import time
from datetime import timedelta

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.template import Context, Template
from django.utils import timezone

from pganalytics.analytics import services
from pganalytics.analytics.collector import claim_due
from pganalytics.models import MonitoredDatabase, Snapshot
from pganalytics.targets import local_dsn
from tests.test_collector import DOWN_DSN, manage

PERIOD = 2.0  # seconds: `collect --every 2s`
HUNG_TIMEOUT = 4  # the hung target's connect_timeout: longer than a period


def fine_databases(target_name, count):
    return [
        MonitoredDatabase.objects.create(name=f"fine{number}", dsn=local_dsn(target_name))
        for number in range(count)
    ]


def taken_times(database):
    snapshots = Snapshot.objects.filter(database=database).order_by("taken_at")
    return list(snapshots.values_list("taken_at", flat=True))


def gaps(database):
    times = taken_times(database)
    return [(later - earlier).total_seconds() for earlier, later in zip(times, times[1:])]


def wait_for_snapshots(databases, count, processes, seconds=40):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes)
        if all(database.snapshots.count() >= count for database in databases):
            return
        time.sleep(0.2)


def stop(process):
    process.terminate()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.endswith("collect: stopped\n")
    return out, err


def test_claims_take_due_databases_once_a_period(db):
    first, second = (
        MonitoredDatabase.objects.create(name=name, dsn=DOWN_DSN) for name in ("a", "b")
    )
    MonitoredDatabase.objects.create(name="paused", dsn=DOWN_DSN, enabled=False)
    period = timedelta(minutes=1)

    assert claim_due(period, 1) == [first]
    assert claim_due(period, 5, exclude=[second.pk]) == []
    assert claim_due(period, 5) == [second]
    assert claim_due(period, 5) == []  # neither is due before a period has passed
    first.refresh_from_db()
    assert first.collection_period == period
    assert first.next_collection_at > timezone.now() + period - timedelta(seconds=5)
    MonitoredDatabase.objects.filter(pk=first.pk).update(
        next_collection_at=timezone.now() - timedelta(seconds=1)
    )
    assert claim_due(period, 5, name="b") == []
    assert claim_due(period, 5) == [first]


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_what_another_collector_has_locked_without_waiting():
    first, second = (
        MonitoredDatabase.objects.create(name=name, dsn=DOWN_DSN) for name in ("a", "b")
    )
    with psycopg.connect(**connection.get_connection_params()) as elsewhere:
        elsewhere.execute(
            "SELECT 1 FROM pganalytics_monitoreddatabase WHERE id = %s FOR UPDATE", [first.pk]
        )  # a claim or a store under way in another process: its transaction still open
        started = time.monotonic()
        assert claim_due(timedelta(minutes=1), 5) == [second]
        assert time.monotonic() - started < 1
    assert claim_due(timedelta(minutes=1), 5) == [first]


@pytest.mark.django_db(transaction=True)
def test_a_single_run_collects_several_databases_at_once(target, target_name):
    fine_databases(target_name, 2)
    MonitoredDatabase.objects.create(name="down", dsn=DOWN_DSN)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="1 database failed"):
        call_command("collect", "--concurrency", "3", stdout=out, stderr=err)

    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["ok fine0", "ok fine1"]
    assert err.getvalue().startswith("FAILED down: cannot connect to ")
    with pytest.raises(CommandError, match="--concurrency 0: expected at least 1 and at most"):
        call_command("collect", "--concurrency", "0")
    with pytest.raises(CommandError, match=r"at most \d+ \(MAX_DATABASE_CONNS - 1\)"):
        call_command("collect", "--concurrency", "1000")


@pytest.mark.django_db(transaction=True)
def test_a_hung_target_costs_only_its_own_timeout(target, target_name, silent_server):
    """One worker waits on the hung target for its connect_timeout, again and again; the
    other collects the other databases every period, on time."""
    hung_dsn = f"host=127.0.0.1 port={silent_server.port} dbname=x connect_timeout={HUNG_TIMEOUT}"
    hung = MonitoredDatabase.objects.create(name="hung", dsn=hung_dsn)
    fine = fine_databases(target_name, 2)

    started = time.monotonic()
    collecting = manage("collect", "--every", f"{PERIOD:g}s", "--concurrency", "2")
    try:
        wait_for_snapshots(fine, 4, [collecting])
        held, elapsed = len(silent_server.accepted), time.monotonic() - started
    finally:
        silent_server.close()  # the attempt under way fails now: no wait to stop
        out, err = stop(collecting)

    for database in fine:
        assert len(taken_times(database)) >= 4, err
        assert max(gaps(database)) < PERIOD + 1.5, gaps(database)  # not the hung 4 s
    assert 1 <= held <= elapsed / HUNG_TIMEOUT + 1  # never claimed again while it hangs
    assert not hung.snapshots.exists()
    assert "FAILED hung: cannot connect to " in err
    assert out.count("ok fine0: ") >= 4 and out.count("ok fine1: ") >= 4


@pytest.mark.django_db(transaction=True)
def test_two_collector_processes_never_collect_a_database_twice_in_a_period(target, target_name):
    databases = fine_databases(target_name, 3)

    started = time.monotonic()
    collectors = [
        manage("collect", "--every", f"{PERIOD:g}s", "--concurrency", "2") for _ in range(2)
    ]
    try:
        wait_for_snapshots(databases, 4, collectors)
    finally:
        outputs = [stop(collector) for collector in collectors]
    elapsed = time.monotonic() - started

    for database in databases:
        assert len(taken_times(database)) >= 4, outputs
        assert len(taken_times(database)) <= elapsed / PERIOD + 1
        assert min(gaps(database)) > PERIOD - 0.5, gaps(database)
    collected = sum(out.count("ok fine") for out, _ in outputs)
    assert collected == Snapshot.objects.count()  # each snapshot stored by one process


def test_the_lag_and_overdue_databases_are_shown(viewer_client):
    now = timezone.now()
    MonitoredDatabase.objects.create(
        name="late",
        dsn=DOWN_DSN,
        last_collected_at=now - timedelta(seconds=150),
        collection_period=timedelta(minutes=1),
    )
    MonitoredDatabase.objects.create(
        name="timely",
        dsn=DOWN_DSN,
        last_collected_at=now - timedelta(seconds=30),
        collection_period=timedelta(minutes=1),
    )
    MonitoredDatabase.objects.create(name="once", dsn=DOWN_DSN, last_collected_at=now)
    MonitoredDatabase.objects.create(name="new", dsn=DOWN_DSN)

    first = viewer_client.get("/api/v1/databases/")
    listed = {row["name"]: row for row in first.json()["databases"]}
    assert listed["late"]["lag_seconds"] == pytest.approx(150, abs=5)
    assert listed["timely"]["lag_seconds"] == pytest.approx(30, abs=5)
    assert (listed["late"]["overdue"], listed["timely"]["overdue"]) == (True, False)
    assert (listed["once"]["overdue"], listed["new"]["lag_seconds"]) == (None, None)
    time.sleep(1)
    again = viewer_client.get("/api/v1/databases/")
    assert again["X-Cache"] == "miss" and "no-store" in again["Cache-Control"]
    later = {row["name"]: row for row in again.json()["databases"]}
    assert later["late"]["lag_seconds"] > listed["late"]["lag_seconds"]  # never a stale lag

    page = viewer_client.get("/").content.decode()
    late = r'>2 min 3[0-3] s ago <span class="muted">\(.+\)</span> <span class="warning">overdue'
    assert re.search(late, page)
    assert re.search(r">3[0-3] s ago <", page) and ">never<" in page
    assert page.count("overdue") == 1


def test_services_lag_of_a_database_never_collected_counts_from_its_registration(db):
    database = MonitoredDatabase.objects.create(
        name="failing", dsn=DOWN_DSN, collection_period=timedelta(seconds=10)
    )
    soon, later = database.created_at + timedelta(seconds=5), timezone.now() + timedelta(minutes=1)

    assert services.collection_lag(database, soon) == (None, False)
    assert services.collection_lag(database, later) == (None, True)
    database.enabled = False
    assert services.collection_lag(database, later) == (None, None)


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (44.6, "45 s"), (200, "3 min 20 s"), (7200, "2 h"), (7500, "2 h 5 min"),
     (100000, "1 d 3 h")],
)
def test_durations_read_as_people_say_them(seconds, text):
    rendered = Template("{% load durations %}{{ seconds|duration }}").render(
        Context({"seconds": seconds})
    )
    assert rendered == text
