"""Evictions: pg_stat_statements_info.dealloc read with each snapshot, the evictions of each
interval, and the pages saying when their figures may be incomplete (and what to raise)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from pganalytics.analytics import services
from pganalytics.analytics.collector import collect
from pganalytics.models import MonitoredDatabase, Snapshot
from pganalytics.targets import reset_statements

MAX_BATCHES = 12
BATCH = 2000
OPERATORS = 15  # 2**15 distinct statements: more than pg_stat_statements.max (10,000 here)


def server_dealloc(connection):
    return connection.execute("SELECT dealloc FROM pg_stat_statements_info").fetchone()[0]


def distinct_statement(number):
    """The `number`th of 2**OPERATORS statements with distinct query ids: constants and column
    names do not tell statements apart in pg_stat_statements, operators do."""
    operators = ("+" if number >> bit & 1 else "-" for bit in range(OPERATORS))
    return "SELECT 1" + "".join(f" {operator} 1" for operator in operators)


def test_distinct_statement_texts_differ():
    assert distinct_statement(0) == "SELECT 1" + " - 1" * OPERATORS
    assert len({distinct_statement(number) for number in range(BATCH)}) == BATCH


def test_each_snapshot_stores_dealloc_and_the_max_and_the_first_has_no_interval(
    target, monitored
):
    first = collect(monitored)
    second = collect(monitored)

    setting = int(target.execute("SHOW pg_stat_statements.max").fetchone()[0])
    assert first.statements_max == second.statements_max == setting
    assert first.dealloc is not None and second.dealloc >= first.dealloc
    assert first.evicted is None
    # Server-wide: another suite running on this server may evict meanwhile.
    assert second.evicted == second.dealloc - first.dealloc


def test_after_a_statistics_reset_evictions_count_from_zero(target, monitored):
    first = collect(monitored)
    # What a server-wide pg_stat_statements_reset() looks like: stats_reset moved on and
    # dealloc went back to zero (here: the previous snapshot's figures raised instead).
    Snapshot.objects.filter(pk=first.pk).update(stats_reset="2000-01-01T00:00:00Z")
    after_reset = collect(monitored)
    Snapshot.objects.filter(pk=after_reset.pk).update(dealloc=after_reset.dealloc + 1000)
    after_lower = collect(monitored)

    assert after_reset.reset_detected and after_reset.evicted == after_reset.dealloc
    assert after_lower.evicted == after_lower.dealloc


def constructed(name, evicted_per_snapshot, statements_max=5000):
    """A database with a snapshot a minute ending now, each with its `evicted` figure."""
    database = MonitoredDatabase.objects.create(name=name, dsn="host=127.0.0.1 port=1 dbname=x")
    now = timezone.now()
    count = len(evicted_per_snapshot)
    for index, evicted in enumerate(evicted_per_snapshot):
        Snapshot.objects.create(
            database=database,
            taken_at=now - timedelta(minutes=count - 1 - index),
            statement_count=0,
            duration_ms=1.0,
            evicted=evicted,
            statements_max=statements_max,
        )
    return database


def test_the_pages_and_api_say_how_often_entries_were_evicted_and_what_to_raise(
    viewer_client,
):
    busy = constructed("busy", [None, 4, 0, 2, 1])  # 3 in the last two minutes
    quiet = constructed("quiet", [None, 0, 0])

    window = services.evictions(busy, timezone.now() - timedelta(seconds=150))
    assert window["evicted"] == 3 and window["statements_max"] == 5000
    expected = (
        "pg_stat_statements evicted its least-used entries 7 times in this window; "
        "figures may be incomplete: raise pg_stat_statements.max, now 5000"
    )
    page = viewer_client.get(f"/databases/{busy.id}/?window=1h").content.decode()
    assert expected in page
    api = viewer_client.get(f"/api/v1/databases/{busy.id}/queries/?window=1h").json()
    assert api["evictions"] == {"evicted": 7, "statements_max": 5000, "warning": expected}
    quiet_api = viewer_client.get(f"/api/v1/databases/{quiet.id}/queries/").json()
    assert quiet_api["evictions"] == {"evicted": 0, "statements_max": 5000, "warning": ""}
    assert "evicted" not in viewer_client.get(f"/databases/{quiet.id}/").content.decode()

    rows = viewer_client.get("/api/v1/databases/").json()["databases"]
    listed = {row["name"]: row for row in rows}
    last_interval = (
        "pg_stat_statements evicted its least-used entries 1 time in the last interval; "
        "figures may be incomplete: raise pg_stat_statements.max, now 5000"
    )
    assert listed["busy"]["evictions"]["warning"] == last_interval
    assert listed["quiet"]["evictions"]["warning"] == ""
    assert last_interval in viewer_client.get("/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_SERVER_WIDE_evictions_from_more_distinct_statements_than_the_max_are_reported(
    target, monitored, viewer_client
):
    """THE ONE TEST THAT EVICTS ENTRIES OF EVERY DATABASE ON THE SERVER: it runs distinct
    top-level statements in the scratch database until pg_stat_statements deallocates (a few
    times 5 % of its least-used entries, of any database: a suite running beside this one may
    lose some entries), then resets the scratch database's statistics only."""
    setting = int(target.execute("SHOW pg_stat_statements.max").fetchone()[0])
    assert 2**OPERATORS > setting
    before = collect(monitored)
    start = server_dealloc(target)
    try:
        for batch in range(MAX_BATCHES):
            with target.pipeline():
                for number in range(batch * BATCH, (batch + 1) * BATCH):
                    target.execute(distinct_statement(number))
            if server_dealloc(target) > start:
                break
    finally:
        reset_statements(target)  # our statements go, and room with them
    after = collect(monitored)

    assert after.statements_max == setting
    assert after.evicted == after.dealloc - before.dealloc > 0
    page = viewer_client.get(f"/databases/{monitored.id}/").content.decode()
    assert f"figures may be incomplete: raise pg_stat_statements.max, now {setting}" in page
    listing = viewer_client.get("/").content.decode()
    assert "in the last interval; figures may be incomplete" in listing
