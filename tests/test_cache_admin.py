"""The admin's cache dashboard: who sees it, its JSON poll, and clearing with permission,
confirmation, CSRF and an admin-log record."""

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.cache import caches
from django.test import Client

from caching import registry

DASHBOARD = "/admin/caching/cachedashboard/"


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture
def staff(db):
    return User.objects.create_user("staff", password="pw", is_staff=True)


@pytest.fixture
def clearer(db):
    user = User.objects.create_user("clearer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="clear_cache"))
    return user


def logged_in(user, **client_options):
    client = Client(**client_options)
    client.force_login(user)
    return client


def test_the_admin_index_links_the_dashboard_for_staff(staff):
    page = logged_in(staff).get("/admin/").content.decode()
    assert f'href="{DASHBOARD}"' in page and "Cache dashboard" in page


def test_non_staff_users_are_sent_to_the_login(db):
    user = User.objects.create_user("analyst", password="pw")
    for url in [DASHBOARD, DASHBOARD + "metrics.json", DASHBOARD + "clear/features/"]:
        response = logged_in(user).get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_dashboard_shows_one_row_per_cache_and_the_pool(staff):
    caches["features"].set("a", 0)
    caches["features"].get("a")
    page = logged_in(staff).get(DASHBOARD).content.decode()
    for name in registry.names():
        assert f'data-cache="{name}"' in page
    assert 'data-cache="totals"' in page and "Database pool" in page
    assert "caching/dashboard.js" in page and "//cdn" not in page


def test_the_json_poll_reports_live_figures_and_totals(staff):
    client = logged_in(staff)
    before = json.loads(client.get(DASHBOARD + "metrics.json").content)
    caches["features"].set("k", 0)
    assert caches["features"].get("k") == 0  # a falsy value is a hit
    caches["features"].get("missing")
    after = json.loads(client.get(DASHBOARD + "metrics.json").content)

    was = {row["name"]: row for row in before["caches"]}["features"]
    features = {row["name"]: row for row in after["caches"]}["features"]
    assert features["entries"] == 1 and features["backend"] == "TTLLRUCache"
    assert (features["hits"], features["misses"]) == (was["hits"] + 1, was["misses"] + 1)
    assert features["hit_ratio"] == features["hits"] / (features["hits"] + features["misses"])
    assert after["totals"]["hits"] == before["totals"]["hits"] + 1
    assert after["totals"]["entries"] == sum(row["entries"] for row in after["caches"])
    assert after["panels"]["Database pool"]["pooled"] is True


def test_without_the_permission_there_are_no_buttons_and_clearing_is_403(staff):
    caches["features"].set("k", 1)
    client = logged_in(staff, enforce_csrf_checks=True)
    page = client.get(DASHBOARD).content.decode()
    assert "Clear</a>" not in page and "clear-all/" not in page
    token = client.get(DASHBOARD).context["csrf_token"]
    for url in [DASHBOARD + "clear/features/", DASHBOARD + "clear-all/", DASHBOARD + "clear/nope/"]:
        assert client.get(url).status_code == 403
        # A forged POST carries a valid CSRF token: the permission alone refuses it.
        assert client.post(url, {"csrfmiddlewaretoken": str(token)}).status_code == 403
    assert caches["features"].get("k") == 1 and not LogEntry.objects.exists()


def test_clearing_one_cache_confirms_then_clears_and_logs_it(clearer):
    for key in range(3):
        caches["features"].set(key, key)
    caches["explain"].set("plan", "kept")
    client = logged_in(clearer, enforce_csrf_checks=True)
    assert f'href="{DASHBOARD}clear/features/"' in client.get(DASHBOARD).content.decode()

    confirmation = client.get(DASHBOARD + "clear/features/")
    assert confirmation.status_code == 200 and caches["features"].get(0) == 0  # not yet
    page = confirmation.content.decode()
    assert "<strong>features</strong>: 3 entries" in page
    assert client.post(DASHBOARD + "clear/features/").status_code == 403  # no CSRF token
    token = confirmation.context["csrf_token"]
    response = client.post(DASHBOARD + "clear/features/", {"csrfmiddlewaretoken": str(token)})

    assert response.status_code == 302 and response["Location"] == DASHBOARD
    assert caches["features"].metrics()["entries"] == 0
    assert caches["explain"].get("plan") == "kept"
    entry = LogEntry.objects.get()
    assert (entry.user, entry.object_id) == (clearer, "features")
    assert entry.get_change_message() == "Cleared the features cache: 3 entries"


def test_clear_all_logs_each_cache(clearer):
    caches["features"].set("a", 1)
    caches["responses"].set("b", 2)
    client = logged_in(clearer)
    assert client.post(DASHBOARD + "clear-all/").status_code == 302
    assert {row["entries"] for row in registry.describe_all()} == {0}
    logged = dict(LogEntry.objects.values_list("object_id", "change_message"))
    assert set(logged) == set(registry.names())
    assert logged["responses"] == "Cleared the responses cache: 1 entry"


def test_the_confirmation_reads_right_for_one_cache_and_for_all(clearer):
    caches["features"].set("only", 1)
    client = logged_in(clearer)
    one = client.get(DASHBOARD + "clear/features/").content.decode()
    assert "<h1>Clear the features cache?</h1>" in one and "Its entries are dropped" in one
    assert "<strong>features</strong>: 1 entry</li>" in one
    every = client.get(DASHBOARD + "clear-all/").content.decode()
    assert "<h1>Clear all caches?</h1>" in every
    assert f"The entries of these {len(registry.names())} caches are dropped" in every
    message = client.post(DASHBOARD + "clear/features/", follow=True).content.decode()
    assert "Cleared features (1 entry)." in message


def test_an_unknown_cache_is_404(clearer):
    assert logged_in(clearer).get(DASHBOARD + "clear/nope/").status_code == 404


def test_clear_urls_answer_other_methods_with_405(clearer):
    caches["features"].set("k", 1)
    client = logged_in(clearer)
    for url in [DASHBOARD + "clear/features/", DASHBOARD + "clear-all/"]:
        assert client.put(url).status_code == 405 and client.delete(url).status_code == 405
    assert caches["features"].get("k") == 1
