"""Predicted latency on the pages and in the API: the query page's `current` and `optimized`
predictions with their interval, model version and source, the top queries' one batch of
the rows not cached, and what the pages show when the service is down, stalls or is behind
the open breaker. Against the real service process and the fault server (tests/fault_server)."""

import time

import pytest
from django.core.cache import caches
from django.test import Client

from caching import registry
from mlclient.predictions import prediction_key
from pganalytics.analytics import services
from pganalytics.analytics.collector import collect
from tests.fault_server import Answer, FaultServer, Stall
from tests.mlservice_process import Service
from tests.test_advisor import COLLECTED_LOOKUP
from tests.test_advisor import LOOKUP as PURCHASES_OF_BUYER
from tests.test_advisor import purchases  # noqa: F401 - a fixture
from tests.test_cache_admin import staff  # noqa: F401 - a fixture
from tests.test_pages_api import (  # noqa: F401 - a fixture
    LOOKUP,
    SCAN,
    collected,
    fingerprint_of,
    get_json,
)

BATCH = "/api/v1/predict/batch"


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture
def ml(settings):
    """A fault server the pages ask (a new address: a page client with a breaker of its own)."""
    server = FaultServer()
    settings.ML_SERVICE_URL = server.url
    yield server
    server.close()


@pytest.fixture
def service(settings, tmp_path):
    """The real ML service (no model yet: its baseline answers), where the pages ask."""
    running = Service(tmp_path / "service.log", workers=1)
    settings.ML_SERVICE_URL = running.url
    yield running
    running.stop()


def query_urls(database, fingerprint):
    path = f"databases/{database.id}/queries/{fingerprint}/"
    return f"/{path}", f"/api/v1/{path}"


def batches(server):
    """The items of each predict/batch request the server received: [[(fingerprint, scenario)]]."""
    return [[(item["fingerprint"], item["scenario"]) for item in request.body["items"]]
            for request in server.requests_to(BATCH)]


def shown(prediction):
    """How the query page writes a prediction with its interval."""
    low, high = prediction["interval_ms"]
    return (f'<strong>{prediction["predicted_ms"]:.2f} ms</strong> ({low:.2f}–{high:.2f} ms, '
            f"80 % interval)")


def test_the_query_page_and_its_api_show_the_prediction_of_the_real_service(
    service, viewer_client, collected
):
    page_url, api_url = query_urls(collected, fingerprint_of(collected, LOOKUP))

    first, detail = get_json(viewer_client, api_url)
    second, _ = get_json(viewer_client, api_url)
    page = viewer_client.get(page_url).content.decode()

    current = detail["prediction"]["current"]
    assert current["status"] == "ok"
    assert (current["model_version"], current["source"]) == ("baseline", "baseline")
    assert current["predicted_ms"] == pytest.approx(detail["features"]["mean_ms"])
    low, high = current["interval_ms"]
    assert low <= current["predicted_ms"] <= high
    assert detail["prediction"]["optimized"] is None  # no index to suggest on `items`
    assert (first["X-Cache"], second["X-Cache"]) == ("miss", "hit")  # fresh: kept
    assert f"now: <span class=\"prediction\">{shown(current)}" in page
    assert "model baseline, source baseline" in page and "stale" not in page


def test_with_a_verified_suggestion_the_optimized_prediction_comes_from_the_what_if_plan(
    ml, purchases, monitored, viewer_client  # noqa: F811
):
    collect(monitored)
    for buyer in range(5):
        purchases.execute(PURCHASES_OF_BUYER, [buyer])
    collect(monitored)
    found = fingerprint_of(monitored, COLLECTED_LOOKUP)
    page_url, api_url = query_urls(monitored, found)

    _, detail = get_json(viewer_client, api_url)
    page = viewer_client.get(page_url).content.decode()

    (suggestion,) = detail["suggestions"]["suggestions"]
    assert suggestion["verified"]
    assert batches(ml) == [[(found, "current"), (found, "optimized")]]  # one call, both
    current, optimized = ml.requests_to(BATCH)[0].body["items"]
    assert current["features"] == detail["features"]
    assert current["features"]["plan_total_cost"] == suggestion["cost_before"]
    assert optimized["features"]["plan_total_cost"] == suggestion["cost_after"]
    assert detail["prediction"]["optimized"]["status"] == "ok"
    assert f"With the suggested index: <span class=\"prediction\">" \
           f"{shown(detail['prediction']['optimized'])}" in page


def test_top_queries_ask_one_batch_of_the_rows_not_cached_with_the_query_pages_features(
    ml, viewer_client, collected
):
    lookup, scan = fingerprint_of(collected, LOOKUP), fingerprint_of(collected, SCAN)
    rows = [row.fingerprint for row in services.top_queries(collected)]
    _, detail = get_json(viewer_client, query_urls(collected, lookup)[1])  # predicts LOOKUP
    assert batches(ml) == [[(lookup, "current")]]

    page = viewer_client.get(f"/databases/{collected.id}/queries/")
    _, listed = get_json(viewer_client, f"/api/v1/databases/{collected.id}/queries/")
    caches["predictions"].delete(prediction_key(scan, "current", ml.version))  # expired
    viewer_client.get(f"/databases/{collected.id}/queries/")

    assert page.status_code == 200 and len(rows) >= 2
    assert batches(ml) == [
        [(lookup, "current")],
        [(fingerprint, "current") for fingerprint in rows if fingerprint != lookup],
        [(scan, "current")],
    ]
    assert ml.requests_to("/api/v1/predict") == []  # no single calls
    scan_features = ml.requests_to(BATCH)[2].body["items"][0]["features"]
    _, scan_detail = get_json(viewer_client, query_urls(collected, scan)[1])
    assert scan_features == scan_detail["features"]  # what its page shows, predicted from
    assert [row["prediction"]["status"] for row in listed["queries"]] == ["ok"] * len(rows)
    by_row = {row["fingerprint"]: row["prediction"] for row in listed["queries"]}
    assert by_row[lookup] == detail["prediction"]["current"]
    assert by_row[lookup]["predicted_ms"] == pytest.approx(detail["features"]["mean_ms"])
    assert "Predicted ms" in page.content.decode()
    assert f'">{by_row[scan]["predicted_ms"]:.3f}</span>' in page.content.decode()


def test_the_overview_shows_a_prediction_per_top_statement(ml, viewer_client, collected):
    _, overview = get_json(viewer_client, f"/api/v1/databases/{collected.id}/")
    _, again = get_json(viewer_client, f"/api/v1/databases/{collected.id}/")
    page = viewer_client.get(f"/databases/{collected.id}/").content.decode()

    assert {row["prediction"]["status"] for row in overview["top"]} == {"ok"}
    assert again["top"] == overview["top"]
    assert batches(ml) == [[(row["fingerprint"], "current") for row in overview["top"]]]
    table = page.split('<table id="top">')[1].split("</table>")[0]
    assert "Predicted ms" in table
    assert f'">{overview["top"][0]["prediction"]["predicted_ms"]:.3f}</span>' in table


def test_with_the_real_service_stopped_the_last_value_is_stale_and_not_kept(
    service, viewer_client, collected
):
    lookup, scan = fingerprint_of(collected, LOOKUP), fingerprint_of(collected, SCAN)
    page_url, api_url = query_urls(collected, lookup)
    fresh = viewer_client.get(page_url).content.decode()  # pages are never kept whole
    service.stop()
    caches["predictions"].delete(prediction_key(lookup, "current", "baseline"))  # expired

    first, detail = get_json(viewer_client, api_url)
    second, _ = get_json(viewer_client, api_url)
    page = viewer_client.get(page_url)
    _, never = get_json(viewer_client, query_urls(collected, scan)[1])

    stale = detail["prediction"]["current"]
    assert stale["status"] == "stale" and stale["source"] == "baseline"
    assert f'now: <span class="prediction">{shown(stale)}' in fresh  # the value shown before
    assert (first["X-Cache"], second["X-Cache"]) == ("miss", "miss")  # not kept as if fresh
    assert "no-store" in first["Cache-Control"]
    html = page.content.decode()
    assert page.status_code == 200 and f'<span class="prediction stale">{shown(stale)}' in html
    assert "Stale: the ML service cannot answer now" in html
    assert never["prediction"]["current"]["status"] == "unavailable"
    assert "Connection refused" in never["prediction"]["current"]["reason"]


def test_a_stalled_service_costs_a_page_one_short_timeout(ml, settings, viewer_client, collected):
    """ML_PAGE_TIMEOUT, one try: the shared client's retries would wait 4 x 5 s here."""
    settings.ML_PAGE_TIMEOUT = 0.5
    ml.script = [Stall(30.0)]
    page_url, api_url = query_urls(collected, fingerprint_of(collected, LOOKUP))

    started = time.monotonic()
    page = viewer_client.get(page_url)
    waited = time.monotonic() - started
    _, detail = get_json(viewer_client, api_url)

    assert page.status_code == 200 and waited < 10  # generous: the stall alone lasts 30 s
    assert len(ml.received) == 2  # one request per view, no retry
    assert "unavailable: " in page.content.decode()
    assert "timed out" in detail["prediction"]["current"]["reason"]


def test_once_the_breaker_is_open_no_page_contacts_the_service(
    ml, settings, viewer_client, collected, staff  # noqa: F811
):
    settings.CIRCUIT_FAILURE_THRESHOLD = 2
    lookup = fingerprint_of(collected, LOOKUP)
    page_url = query_urls(collected, lookup)[0]
    viewer_client.get(page_url)  # a good prediction, kept
    caches["predictions"].delete(prediction_key(lookup, "current", ml.version))
    ml.script = [Answer(503, {"error": "overloaded"})]
    for _ in range(2):
        get_json(viewer_client, f"/api/v1/databases/{collected.id}/queries/?order=calls")
    asked = len(ml.received)

    page = viewer_client.get(page_url).content.decode()
    _, listed = get_json(viewer_client, f"/api/v1/databases/{collected.id}/queries/")
    overview = viewer_client.get(f"/databases/{collected.id}/")
    admin = Client()
    admin.force_login(staff)
    dashboard = admin.get("/admin/caching/cachedashboard/").content.decode()
    panel = admin.get("/admin/caching/cachedashboard/metrics.json").json()["panels"]["ML client"]

    assert len(ml.received) == asked  # not contacted at all
    assert '<span class="prediction stale">' in page
    by_row = {row["fingerprint"]: row["prediction"] for row in listed["queries"]}
    assert by_row.pop(lookup)["status"] == "stale"
    others = list(by_row.values())
    assert others and all(p["status"] == "unavailable" and "circuit open" in p["reason"]
                          for p in others)
    assert overview.status_code == 200
    assert (panel["breaker_state"], panel["consecutive_failures"]) == ("open", 2)
    assert "503 overloaded" in panel["last_error"] and panel["failures"] == 2
    assert panel["service"] == ml.url and panel["connections_made"] >= 1
    assert '<table class="cache-panel" data-panel="ML client">' in dashboard
    assert '<td class="num" data-field="breaker_state">open</td>' in dashboard
