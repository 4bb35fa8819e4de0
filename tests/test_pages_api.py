"""The analytics pages and the JSON API over real collected snapshots: login, answers,
bad input, response caching per user and invalidation by a new snapshot."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import caches
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.formats import date_format

from caching import registry
from pganalytics.analytics import history
from pganalytics.analytics.collector import CollectionError, collect
from pganalytics.fingerprint import fingerprint
from pganalytics.models import MonitoredDatabase, Query, QueryStat, Snapshot
from tests.test_workers import free_port

LOOKUP = "SELECT count(*) FROM items WHERE id = %s"
SCAN = "SELECT count(*) FROM items WHERE id > %s"
REGRESSING = "SELECT * FROM accounts WHERE owner = $1"
IDLE = "idle"  # in a constructed history: the query's row counts no calls since the last one


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture
def collected(target, monitored):
    """Three snapshots of the scratch target: two intervals of LOOKUP (30 calls) and SCAN (5)."""
    collect(monitored)
    for _ in range(2):
        for number in range(15):
            target.execute(LOOKUP, [number])
        for number in range(5):
            target.execute(SCAN, [number])
        collect(monitored)
    return monitored


@pytest.fixture
def user(make_viewer):
    return make_viewer("analyst")


@pytest.fixture
def client_of(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def fingerprint_of(database, statement):
    prefix = statement.split("%s")[0]
    return Query.objects.get(database=database, text__startswith=prefix).fingerprint


def get_json(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    return response, json.loads(response.content)


def test_pages_redirect_to_login_and_the_api_answers_401(client, collected):
    for url in ["/", f"/databases/{collected.id}/", "/anomalies/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    response, body = get_json(client, "/api/v1/databases/", status=401)
    assert body == {"error": "authentication required"}


def test_the_database_list(client_of, user, collected):
    client = client_of(user)
    page = client.get("/").content.decode()
    assert f'href="/databases/{collected.id}/"' in page and "<script" not in page
    _, body = get_json(client, "/api/v1/databases/")
    collected.refresh_from_db()
    newest = collected.snapshots.latest()
    assert 0 <= body["databases"][0].pop("lag_seconds") < 60
    evictions = body["databases"][0].pop("evictions")
    assert (evictions["evicted"], evictions["statements_max"]) == (
        newest.evicted, newest.statements_max  # evictions are server-wide: another suite's too
    )
    assert body["databases"] == [
        {
            "id": collected.id,
            "name": "target",
            "enabled": True,
            "dsn": None,  # a viewer's: the DSN, even masked, is staff's to see
            "snapshots": 3,
            "last_collected_at": DjangoJSONEncoder().default(collected.last_collected_at),
            "last_error": "",
            "warning": "",
            "connects_as_superuser": True,
            "overdue": None,  # no `collect --every` has claimed it
        }
    ]
    user.is_staff = True
    user.save()
    _, body = get_json(client, "/api/v1/databases/")
    assert body["databases"][0]["dsn"] == collected.masked_dsn


def test_top_queries_sum_the_intervals_and_sort(client_of, user, collected):
    client = client_of(user)
    url = f"/api/v1/databases/{collected.id}/queries/"
    _, by_calls = get_json(client, url + "?order=calls")
    calls = {row["text"]: row["calls"] for row in by_calls["queries"]}
    assert calls[LOOKUP.replace("%s", "$1")] == 30
    assert by_calls["queries"][0]["text"] == LOOKUP.replace("%s", "$1")
    assert by_calls["order"] == "calls" and by_calls["window_seconds"] == 86400
    _, by_mean = get_json(client, url + "?order=mean&window=1h")
    means = [row["mean_ms"] for row in by_mean["queries"]]
    assert means == sorted(means, reverse=True)
    _, none = get_json(client, url + "?window=1ms")
    assert none["queries"] == []

    page = client.get(f"/databases/{collected.id}/queries/?order=calls").content.decode()
    assert "SELECT count(*) FROM items WHERE id = $1" in page
    assert f'/databases/{collected.id}/queries/{fingerprint_of(collected, LOOKUP)}/' in page


@pytest.mark.parametrize(
    "query, message",
    [
        ("window=soon", "window='soon': expected a duration"),
        ("order=rows", "order='rows'"),
        ("window=100000000h", "window='100000000h': at most 3660 days"),
        ("window=99999999999h", "window='99999999999h': at most"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(client_of, user, collected, query, message):
    client = client_of(user)
    _, body = get_json(client, f"/api/v1/databases/{collected.id}/queries/?{query}", status=400)
    assert body["error"].startswith(message)
    page = client.get(f"/databases/{collected.id}/queries/?{query}")
    assert page.status_code == 400 and message in page.content.decode().replace("&#x27;", "'")


def test_unknown_ids_are_404(client_of, user, collected):
    client = client_of(user)
    get_json(client, "/api/v1/databases/999999/queries/", status=404)
    get_json(client, f"/api/v1/databases/{collected.id}/queries/ffffffffffffffff/", status=404)
    assert client.get(f"/databases/{collected.id}/queries/ffffffffffffffff/").status_code == 404
    for bad in ["ab%00cd", "a" * 300, "FFFFFFFFFFFFFFFF"]:
        get_json(client, f"/api/v1/databases/{collected.id}/queries/{bad}/", status=404)
        assert client.get(f"/databases/{collected.id}/queries/{bad}/").status_code == 404


def test_query_detail_shows_history_plan_features_and_why_no_prediction(
    client_of, user, collected, settings
):
    settings.ML_SERVICE_URL = f"http://127.0.0.1:{free_port()}"  # no ML service there
    client = client_of(user)
    found = fingerprint_of(collected, LOOKUP)
    _, detail = get_json(client, f"/api/v1/databases/{collected.id}/queries/{found}/")
    assert detail["fingerprint"] == found and detail["parsed"] is True
    assert [point["calls"] for point in detail["history"]] == [15, 15]
    assert detail["plan"]["status"] == "ok" and detail["plan"]["generic"] is True
    assert detail["plan"]["raw"][0]["Plan"]["Node Type"] == detail["plan"]["summary"]["top_node"]
    assert detail["features"]["tables"] == 1 and detail["features"]["has_plan"] == 1
    assert detail["features"]["calls_per_minute"] > 0
    assert detail["anomalies"]["enough_history"] is False  # two intervals are not a baseline
    assert detail["prediction"]["current"]["status"] == "unavailable"
    assert "Connection refused" in detail["prediction"]["current"]["reason"]

    page = client.get(f"/databases/{collected.id}/queries/{found}/").content.decode()
    assert "<svg" in page and "<polyline" in page and "<script" not in page
    assert detail["plan"]["summary"]["top_node"] in page and "calls_per_minute" in page
    assert "No verdict yet" in page
    assert 'now: <span class="muted prediction">unavailable: ' in page


def test_a_ddl_statement_gets_a_refusal_not_an_error_page(client_of, user, collected, target):
    target.execute("CREATE TEMP TABLE scratch (id int)")
    collect(collected)
    found = fingerprint_of(collected, "CREATE TEMP TABLE scratch")
    client = client_of(user)
    _, detail = get_json(client, f"/api/v1/databases/{collected.id}/queries/{found}/")
    assert detail["plan"]["status"] == "refused"
    page = client.get(f"/databases/{collected.id}/queries/{found}/")
    assert page.status_code == 200 and "No plan (refused)" in page.content.decode()


def test_the_second_request_is_a_cache_hit_private_to_the_user(
    client_of, user, make_viewer, collected
):
    url = f"/api/v1/databases/{collected.id}/queries/?order=calls"
    client = client_of(user)
    first, first_body = get_json(client, url)
    second, second_body = get_json(client, url)
    assert (first["X-Cache"], second["X-Cache"]) == ("miss", "hit")
    assert first_body == second_body
    assert "private" in second["Cache-Control"]
    assert get_json(client, url.replace("calls", "mean"))[0]["X-Cache"] == "miss"

    other = make_viewer("other")
    assert get_json(client_of(other), url)[0]["X-Cache"] == "miss"  # never shared across users
    other.user_permissions.add(Permission.objects.get(codename="view_snapshot"))
    other = User.objects.get(pk=other.pk)  # a fresh instance: permissions are cached per object
    assert get_json(client_of(other), url)[0]["X-Cache"] == "miss"  # nor across permissions


def test_a_new_snapshot_invalidates_what_depends_on_it_plans_included(
    client_of, user, collected, target
):
    client = client_of(user)
    found = fingerprint_of(collected, LOOKUP)
    url = f"/api/v1/databases/{collected.id}/queries/{found}/"
    get_json(client, url)
    assert get_json(client, url)[0]["X-Cache"] == "hit"
    explain_misses = caches["explain"].metrics()["misses"]
    features_misses = caches["features"].metrics()["misses"]

    for number in range(4):
        target.execute(LOOKUP, [number])
    collect(collected)

    response, detail = get_json(client, url)
    assert response["X-Cache"] == "miss"
    assert [point["calls"] for point in detail["history"]] == [15, 15, 4]
    assert caches["explain"].metrics()["misses"] == explain_misses + 1  # planned anew
    assert caches["features"].metrics()["misses"] == features_misses + 1  # recomputed


def test_a_failed_collection_or_an_admin_edit_refreshes_the_database_list(
    client_of, user, collected
):
    user.is_staff = True  # to see the DSN
    user.save()
    client = client_of(user)
    get_json(client, "/api/v1/databases/")
    again = get_json(client, "/api/v1/databases/")[0]  # never kept: its lag moves with the clock
    assert again["X-Cache"] == "miss" and "no-store" in again["Cache-Control"]

    collected.dsn = "host=127.0.0.1 port=1 dbname=gone connect_timeout=2"
    collected.save()
    response, body = get_json(client, "/api/v1/databases/")
    assert response["X-Cache"] == "miss" and body["databases"][0]["dsn"] == collected.masked_dsn

    with pytest.raises(CollectionError):
        collect(collected)
    response, body = get_json(client, "/api/v1/databases/")
    assert response["X-Cache"] == "miss"
    assert body["databases"][0]["last_error"].startswith("target: cannot connect")


def constructed_history(name, means_ms, calls=60):
    """A database whose one query ran `calls` per minute at each of `means_ms`, oldest first
    (None: a snapshot without the query; IDLE: one whose row says it did not run)."""
    database = MonitoredDatabase.objects.create(name=name, dsn="host=127.0.0.1 port=1 dbname=x")
    text = fingerprint(REGRESSING)
    now = timezone.now()
    query = Query.objects.create(
        database=database, fingerprint=text.fingerprint, text=REGRESSING,
        normalized=text.normalized, parsed=True, first_seen=now, last_seen=now, userid=10,
    )
    cumulative_calls, cumulative_ms = 0, 0.0
    for age, mean in zip(range(len(means_ms), 0, -1), means_ms):
        snapshot = Snapshot.objects.create(
            database=database, taken_at=now - timedelta(minutes=age), statement_count=1,
            duration_ms=1.0,
        )
        if mean is None:
            continue
        ran, mean = (0, 0.0) if mean == IDLE else (calls, mean)  # 0.0: as the collector stores
        cumulative_calls += ran
        cumulative_ms += mean * ran
        history.ensure_partition(QueryStat, snapshot.taken_at)
        QueryStat.objects.create(
            snapshot=snapshot, query=query, taken_at=snapshot.taken_at, database=database,
            calls=cumulative_calls,
            total_exec_time=cumulative_ms, min_exec_time=0, max_exec_time=mean,
            mean_exec_time=cumulative_ms / cumulative_calls, stddev_exec_time=0, rows=0,
            shared_blks_hit=0, shared_blks_read=0, plans=0, total_plan_time=0,
            interval_seconds=60.0, delta_calls=ran, delta_total_exec_time=mean * ran,
            delta_mean_exec_time=mean, delta_rows=0, delta_shared_blks_hit=0,
            delta_shared_blks_read=0,
        )
    return database, query


def test_anomalies_list_a_regression_across_databases(client_of, user):
    steady = [2.0, 2.1, 1.9, 2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.0]
    regressed, query = constructed_history("regressed", steady + [40.0])
    constructed_history("steady", steady + [2.0])
    client = client_of(user)

    _, body = get_json(client, "/api/v1/anomalies/")
    assert [(a["database"], a["metric"], a["severity"]) for a in body["anomalies"]] == [
        ("regressed", "mean_ms", "critical")
    ]
    assert body["anomalies"][0]["value"] == 40.0 and body["anomalies"][0]["baseline_median"] == 2.0
    page = client.get("/anomalies/").content.decode()
    assert f"/databases/{regressed.id}/queries/{query.fingerprint}/" in page and "critical" in page

    _, detail = get_json(client, f"/api/v1/databases/{regressed.id}/queries/{query.fingerprint}/")
    assert [a["metric"] for a in detail["anomalies"]["items"]] == ["mean_ms"]
    assert detail["plan"]["status"] == "failed"  # the constructed server does not exist
    # A failed plan may be transient: that answer is not kept for the data version.
    again = client.get(f"/api/v1/databases/{regressed.id}/queries/{query.fingerprint}/")
    assert again["X-Cache"] == "miss" and "no-store" in again["Cache-Control"]


def test_an_anomaly_stays_open_through_idle_collections_until_calls_are_back_to_normal(
    client_of, user
):
    """A regression, then collections in which the query did not run: still listed, since the
    first slow interval; one interval with calls back within the baseline closes it."""
    steady = [2.0, 2.1, 1.9, 2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.0]
    regression = steady + [40.0, 41.0] + [IDLE] * 3
    database, query = constructed_history("open", regression)
    constructed_history("closed", regression + [2.1, IDLE])
    since = Snapshot.objects.filter(database=database).order_by("taken_at")[len(steady)].taken_at
    since_json = DjangoJSONEncoder().default(since)
    since_shown = date_format(timezone.localtime(since), "DATETIME_FORMAT")
    client = client_of(user)

    _, body = get_json(client, "/api/v1/anomalies/")
    assert [
        (a["database"], a["metric"], a["value"], a["baseline_median"], a["since"])
        for a in body["anomalies"]
    ] == [("open", "mean_ms", 41.0, 2.0, since_json)]
    assert since_shown in client.get("/anomalies/").content.decode()

    url = f"/databases/{database.id}/queries/{query.fingerprint}/"
    _, detail = get_json(client, "/api/v1" + url)
    assert [(a["metric"], a["since"]) for a in detail["anomalies"]["items"]] == [
        ("mean_ms", since_json)
    ]
    page = client.get(url).content.decode()
    assert since_shown in page.split("<h2>Anomalies</h2>")[1].split("<h2>Plan</h2>")[0]


@pytest.mark.parametrize("first", ["page", "list"])
def test_a_verdict_does_not_depend_on_which_page_asked_first(client_of, user, first):
    """The query ran in the first 10 of 60 snapshots and in the last one: over the recent
    window it has one interval, whether the query page or the anomaly list asks first."""
    steady = [2.0, 2.1, 1.9, 2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.0]
    database, query = constructed_history("gappy", steady + [None] * 49 + [40.0])
    client = client_of(user)
    detail_url = f"/api/v1/databases/{database.id}/queries/{query.fingerprint}/"
    if first == "list":
        assert get_json(client, "/api/v1/anomalies/")[1]["anomalies"] == []
    verdict = get_json(client, detail_url)[1]["anomalies"]
    assert (verdict["enough_history"], verdict["points"], verdict["items"]) == (False, 1, [])
    if first == "page":
        assert get_json(client, "/api/v1/anomalies/")[1]["anomalies"] == []


def test_deleting_old_snapshots_refreshes_the_cached_answers(client_of, user, collected):
    client = client_of(user)
    url = f"/api/v1/databases/{collected.id}/queries/"
    get_json(client, url)
    assert get_json(client, url)[0]["X-Cache"] == "hit"
    Snapshot.objects.filter(database=collected).order_by("taken_at").first().delete()
    assert get_json(client, url)[0]["X-Cache"] == "miss"
