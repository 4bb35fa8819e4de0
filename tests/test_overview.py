"""The overview of a database, the page a DBA opens first, and its API mirror, over real
collected snapshots: where the time goes (shares of the database's total), open anomalies,
suggested indexes (the real advisor, with hypopg), pg_stat_statements' entries and evictions,
the last collection and its lag; the share and the marks on the top queries too."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Sum
from django.utils import timezone
from django.utils.formats import date_format

from caching import registry
from pganalytics.analytics import services
from pganalytics.analytics.collector import collect
from pganalytics.models import QueryStat, Snapshot
from pganalytics.templatetags.shares import percent
from tests.test_advisor import COLLECTED_LOOKUP, purchases  # noqa: F401 - a fixture
from tests.test_advisor import LOOKUP as PURCHASES_OF_BUYER
from tests.test_evictions import constructed as with_evictions
from tests.test_pages_api import (  # noqa: F401 - fixtures
    LOOKUP,
    collected,
    constructed_history,
    fingerprint_of,
    get_json,
)

PURCHASES_OF_TOTAL = "SELECT id FROM purchases WHERE total = %s"
STEADY = [2.0, 2.1, 1.9, 2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.0]


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


def as_json(value):
    """`value` as the API writes it."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def stored_totals(database):
    """The database's time and statements over all its stored intervals, read directly."""
    moved = QueryStat.objects.filter(database=database, delta_calls__gt=0)
    total = moved.aggregate(total=Sum("delta_total_exec_time"))["total"]
    return total, moved.values("query").distinct().count()


def test_the_overview_says_where_the_time_goes_and_how_fresh_it_is(viewer_client, collected):
    _, body = get_json(viewer_client, f"/api/v1/databases/{collected.id}/")
    collected.refresh_from_db()
    total, statements = stored_totals(collected)
    top = body["top"]

    assert body["database"] == {"id": collected.id, "name": "target"}
    assert body["window_seconds"] == 86400
    assert (body["statements"], body["total_ms"]) == (statements, pytest.approx(total))
    assert [row["total_ms"] for row in top] == sorted((r["total_ms"] for r in top), reverse=True)
    assert top[0]["share"] == pytest.approx(top[0]["total_ms"] / total)
    assert all(row["share"] == pytest.approx(row["total_ms"] / total) for row in top)
    assert sum(row["share"] for row in top) <= 1 + 1e-9
    assert body["top_share"] == pytest.approx(sum(row["share"] for row in top))
    lookup = next(row for row in top if row["fingerprint"] == fingerprint_of(collected, LOOKUP))
    assert lookup["calls"] == 30 and lookup["anomaly"] is None
    assert body["anomalies"] == []  # two intervals are no baseline

    newest = collected.snapshots.latest()
    assert body["pg_stat_statements"] == {
        "statements": newest.statement_count,
        "statements_max": newest.statements_max,
        "dealloc": newest.dealloc,
        "stats_reset": as_json(newest.stats_reset),
    }
    since = timezone.now() - timedelta(days=1)  # before the fixture's snapshots
    assert body["evictions"] == services.evictions(collected, since)
    state = body["collection"]
    assert state.pop("last_collected_at") == as_json(collected.last_collected_at)
    assert 0 <= state.pop("lag_seconds") < 60
    assert state == {
        "enabled": True, "overdue": None, "period_seconds": None, "last_error": "",
    }

    page = viewer_client.get(f"/databases/{collected.id}/").content.decode()
    assert "<h1>Overview · target</h1>" in page and "<script" not in page
    assert percent(top[0]["share"]) in page and " ago</strong>" in page
    for row in top:
        assert f'href="/databases/{collected.id}/queries/{row["fingerprint"]}/"' in page
        assert f">{percent(row['share'])}</td>" in page
    assert f'href="/databases/{collected.id}/queries/?window=24h">All top queries' in page
    assert "no <code>collect --every</code> collects it on a schedule" in page


def test_the_database_list_and_the_tabs_lead_to_the_overview(viewer_client, collected):
    listing = viewer_client.get("/").content.decode()
    assert f'<a href="/databases/{collected.id}/">target</a>' in listing
    queries = viewer_client.get(f"/databases/{collected.id}/queries/?window=1h").content.decode()
    overview_tab = f'<a href="/databases/{collected.id}/?window=1h">Overview</a>'
    assert overview_tab in queries
    found = fingerprint_of(collected, LOOKUP)
    detail = viewer_client.get(f"/databases/{collected.id}/queries/{found}/").content.decode()
    assert f'<a href="/databases/{collected.id}/">target</a></h1>' in detail


def test_a_collection_overdue_for_its_collector_is_flagged_stale(viewer_client, collected):
    collected.collection_period = timedelta(minutes=1)
    collected.last_collected_at = timezone.now() - timedelta(minutes=5)
    collected.save()
    _, body = get_json(viewer_client, f"/api/v1/databases/{collected.id}/")
    assert body["collection"]["overdue"] is True and body["collection"]["period_seconds"] == 60
    assert 300 <= body["collection"]["lag_seconds"] < 360
    page = viewer_client.get(f"/databases/{collected.id}/").content.decode()
    assert "stale: no collection for over 2 periods of 1 min" in page and "5 min" in page

    collected.last_collected_at = timezone.now()
    collected.save()
    _, body = get_json(viewer_client, f"/api/v1/databases/{collected.id}/")
    assert body["collection"]["overdue"] is False
    assert "stale" not in viewer_client.get(f"/databases/{collected.id}/").content.decode()


def test_evictions_in_the_window_and_since_the_reset_are_shown(viewer_client):
    busy = with_evictions("busy", [None, 4, 0, 2, 1], statements_max=5000)
    busy.snapshots.filter(taken_at=busy.snapshots.latest().taken_at).update(dealloc=12)
    _, body = get_json(viewer_client, f"/api/v1/databases/{busy.id}/?window=1h")
    assert body["evictions"]["evicted"] == 7
    pgss = body["pg_stat_statements"]
    assert (pgss["statements"], pgss["statements_max"], pgss["dealloc"]) == (0, 5000, 12)
    page = viewer_client.get(f"/databases/{busy.id}/?window=1h").content.decode()
    assert body["evictions"]["warning"] + "." in page
    assert "holds 0 entries of 5000, 12 evictions since its statistics were reset" in page


def test_a_database_never_collected_has_an_empty_overview(viewer_client, unreachable):
    _, body = get_json(viewer_client, f"/api/v1/databases/{unreachable.id}/")
    assert (body["top"], body["anomalies"], body["suggestions"]) == ([], [], [])
    assert (body["statements"], body["total_ms"]) == (0, 0.0)
    assert body["collection"]["lag_seconds"] is None
    assert body["pg_stat_statements"]["statements"] is None
    page = viewer_client.get(f"/databases/{unreachable.id}/").content.decode()
    assert '<span class="warning">never</span>' in page and "No interval in this window" in page


def test_open_anomalies_are_listed_and_their_rows_marked(viewer_client):
    regressed, query = constructed_history("regressed", STEADY + [40.0, 41.0])
    since = Snapshot.objects.filter(database=regressed).order_by("taken_at")[len(STEADY)].taken_at
    _, body = get_json(viewer_client, f"/api/v1/databases/{regressed.id}/")
    assert [
        (a["fingerprint"], a["metric"], a["severity"], a["value"], a["since"])
        for a in body["anomalies"]
    ] == [(query.fingerprint, "mean_ms", "critical", 41.0, as_json(since))]
    assert [(row["fingerprint"], row["anomaly"]) for row in body["top"]] == [
        (query.fingerprint, "critical")
    ]
    assert body["top"][0]["share"] == 1.0  # the only statement

    page = viewer_client.get(f"/databases/{regressed.id}/").content.decode()
    anomalies = page.split('<table id="anomalies">')[1]
    assert f"/databases/{regressed.id}/queries/{query.fingerprint}/" in anomalies
    assert date_format(timezone.localtime(since), "DATETIME_FORMAT") in anomalies
    assert '<span class="mark critical" title="open critical anomaly">' in page

    _, listed = get_json(viewer_client, f"/api/v1/databases/{regressed.id}/queries/")
    assert [(row["anomaly"], row["share"]) for row in listed["queries"]] == [("critical", 1.0)]
    queries_page = viewer_client.get(f"/databases/{regressed.id}/queries/").content.decode()
    assert '<span class="mark critical"' in queries_page and "100.0 %" in queries_page


def test_the_top_queries_carry_their_share_of_the_database_total(viewer_client, collected):
    total, statements = stored_totals(collected)
    _, body = get_json(viewer_client, f"/api/v1/databases/{collected.id}/queries/?order=calls")
    assert (body["statements"], body["total_ms"]) == (statements, pytest.approx(total))
    assert body["calls"] == sum(row["calls"] for row in body["queries"])  # all of them fit
    assert sum(row["share"] for row in body["queries"]) == pytest.approx(1.0)
    for row in body["queries"]:
        assert row["share"] == pytest.approx(row["total_ms"] / total)
    page = viewer_client.get(f"/databases/{collected.id}/queries/?order=calls").content.decode()
    assert "<th class=\"num\">Share of time</th>" in page
    assert percent(body["queries"][0]["share"]) in page


@pytest.mark.parametrize(
    "query, message",
    [
        ("window=soon", "window='soon': expected a duration"),
        ("window=3661d", "window='3661d': at most 3660 days"),
        ("window=1h&window=2h", "window: given 2 times, expected once"),
    ],
)
def test_a_bad_window_is_a_400_naming_it(viewer_client, collected, query, message):
    _, body = get_json(viewer_client, f"/api/v1/databases/{collected.id}/?{query}", status=400)
    assert body["error"].startswith(message)
    page = viewer_client.get(f"/databases/{collected.id}/?{query}")
    assert page.status_code == 400
    assert message in page.content.decode().replace("&#x27;", "'")


def test_windows_as_on_the_top_queries_and_unknown_databases(viewer_client, collected):
    _, none = get_json(viewer_client, f"/api/v1/databases/{collected.id}/?window=1ms")
    assert (none["top"], none["statements"], none["window_seconds"]) == ([], 0, 0.001)
    _, week = get_json(viewer_client, f"/api/v1/databases/{collected.id}/?window=1w&junk=1")
    assert week["window_seconds"] == 7 * 86400 and week["top"]
    head = viewer_client.head(f"/api/v1/databases/{collected.id}/?window=7d")
    assert head.status_code == 200 and head["Content-Type"] == "application/json"
    _, body = get_json(viewer_client, "/api/v1/databases/999999/", status=404)
    assert body == {"error": "database 999999 not found"}
    assert viewer_client.get("/databases/999999/").status_code == 404


def test_viewers_read_it_others_do_not(client, make_viewer, collected):
    url = f"/api/v1/databases/{collected.id}/"
    response, _ = get_json(client, url, status=401)
    assert client.get(f"/databases/{collected.id}/").status_code == 302
    client.force_login(User.objects.create_user("outsider", password="pw"))
    _, body = get_json(client, url, status=403)
    assert body == {"error": "permission required: pganalytics.view_analytics"}
    assert client.get(f"/databases/{collected.id}/").status_code == 403
    client.force_login(make_viewer("reader"))
    get_json(client, url)
    assert client.get(f"/databases/{collected.id}/").status_code == 200
    assert client.post(url).status_code == 405


def test_the_figures_are_cached_per_data_version_the_lag_never(viewer_client, collected, target):
    url = f"/api/v1/databases/{collected.id}/"
    responses = caches["responses"]
    first, body = get_json(viewer_client, url)
    assert "no-store" in first["Cache-Control"] and "private" in first["Cache-Control"]
    hits = responses.metrics()["hits"]
    _, again = get_json(viewer_client, url)
    assert responses.metrics()["hits"] == hits + 1  # the figures, from the cache
    assert again["top"] == body["top"]
    page = viewer_client.get(f"/databases/{collected.id}/")  # the page shares them
    assert page.status_code == 200 and responses.metrics()["hits"] == hits + 2

    for number in range(7):
        target.execute(LOOKUP, [number])
    collect(collected)
    _, after = get_json(viewer_client, url)
    lookup = fingerprint_of(collected, LOOKUP)
    calls = {row["fingerprint"]: row["calls"] for row in after["top"]}
    assert calls[lookup] == 37  # a new snapshot: a new data version, figures made anew
    assert after["collection"]["last_collected_at"] != body["collection"]["last_collected_at"]


def test_suggested_indexes_are_ranked_by_saving_and_their_rows_marked(
    purchases, monitored, viewer_client  # noqa: F811
):
    collect(monitored)
    for buyer in range(20):
        purchases.execute(PURCHASES_OF_BUYER, [buyer])
    purchases.execute(PURCHASES_OF_TOTAL, [3])
    purchases.execute("SELECT count(*) FROM purchases")
    collect(monitored)
    by_buyer = fingerprint_of(monitored, COLLECTED_LOOKUP)
    by_total = fingerprint_of(monitored, PURCHASES_OF_TOTAL)

    _, body = get_json(viewer_client, f"/api/v1/databases/{monitored.id}/")
    suggestions = body["suggestions"]
    assert [(s["fingerprint"], s["columns"]) for s in suggestions] == [
        (by_buyer, ["buyer"]), (by_total, ["total"])
    ]
    assert all(s["verified"] for s in suggestions)
    savings = [s["estimated_saving"] for s in suggestions]
    assert savings == sorted(savings, reverse=True) and savings[1] > 0
    assert suggestions[0]["estimated_saving"] == pytest.approx(
        (suggestions[0]["cost_before"] - suggestions[0]["cost_after"]) * 20
    )
    assert suggestions == as_json(services.database_suggestions(monitored))
    marked = {row["fingerprint"] for row in body["top"] if row["suggested"]}
    assert marked == {by_buyer, by_total} and len(body["top"]) > 2

    page = viewer_client.get(f"/databases/{monitored.id}/").content.decode()
    table = page.split('<table id="suggestions">')[1].split("</table>")[0]
    assert table.index("(&quot;buyer&quot;)") < table.index("(&quot;total&quot;)")
    assert 'CREATE INDEX CONCURRENTLY ON &quot;public&quot;.&quot;purchases&quot;' in table
    assert f'href="/databases/{monitored.id}/queries/{by_buyer}/"' in table
    assert page.count('<span class="mark suggested"') == 2

    _, listed = get_json(viewer_client, f"/api/v1/databases/{monitored.id}/queries/")
    assert {row["fingerprint"] for row in listed["queries"] if row["suggested"]} == marked
    queries_page = viewer_client.get(f"/databases/{monitored.id}/queries/").content.decode()
    assert queries_page.count('<span class="mark suggested"') == 2


def test_a_hung_target_costs_the_pages_one_connection_timeout_not_one_per_statement(
    viewer_client, collected, silent_server
):
    """The suggestions need the target; one that does not answer is asked once per page,
    and the pages still answer with everything collected."""
    collected.dsn = f"host=127.0.0.1 port={silent_server.port} dbname=x connect_timeout=1"
    collected.save()
    _, body = get_json(viewer_client, f"/api/v1/databases/{collected.id}/")
    assert len(body["top"]) >= 2 and body["suggestions"] == []
    assert len(silent_server.accepted) == 1
    page = viewer_client.get(f"/databases/{collected.id}/queries/")
    assert page.status_code == 200 and len(silent_server.accepted) == 1  # kept for a while
