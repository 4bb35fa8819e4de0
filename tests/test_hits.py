"""A cached answer without a database round trip (the Redis tier): sessions, the user with
their permissions and the data version read from caches every process shares, each moved by
the changes it depends on; a cache that lost them falls back to the database."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from caching import registry
from caching.config import named_caches
from pganalytics.analytics import history
from pganalytics.analytics.collector import CollectionError, collect
from pganalytics.models import MonitoredDatabase, Query
from tests.conftest import child_environment
from tests.test_tiered import RedisServer, eventually

pytestmark = pytest.mark.django_db(transaction=True)  # changes move tokens once they commit


@pytest.fixture(scope="module")
def redis_url():
    """A redis-server of this module alone: no other test's keys or events."""
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def tier(settings, redis_url):
    """The settings of a deployment with CACHE_L2_URL (the real key prefix, so that a
    `manage.py` child shares the keys); every cache empty."""
    ttls = {alias: conf["TIMEOUT"] for alias, conf in settings.CACHES.items() if alias != "default"}
    settings.CACHES = named_caches(
        ttls, max_entries=1000, l2_url=redis_url,
        key_prefix=settings.CACHES["default"]["KEY_PREFIX"],
    )
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    registry.clear_all()
    return redis_url


@pytest.fixture
def analyst(client, make_viewer):
    user = make_viewer("analyst")
    client.force_login(user)
    return user


def top_url(database):
    return f"/api/v1/databases/{database.id}/queries/"


def cache_state(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response["X-Cache"]


def test_a_hit_costs_no_database_query_with_the_tier(
    tier, client, analyst, two_snapshots, django_assert_num_queries
):
    query = Query.objects.get(database=two_snapshots, text__startswith="SELECT count")
    for url in [top_url(two_snapshots), f"{top_url(two_snapshots)}{query.fingerprint}/?window=7d"]:
        assert cache_state(client, url) == "miss"
        with django_assert_num_queries(0):
            assert cache_state(client, url) == "hit"


def test_without_the_tier_a_hit_reads_session_user_and_version_from_the_database(
    client, analyst, two_snapshots, django_assert_max_num_queries
):
    """Per-process copies would let another worker serve what a change made stale."""
    assert not registry.shared("versions") and django_settings.SESSION_ENGINE.endswith(".db")
    cache_state(client, top_url(two_snapshots))
    with django_assert_max_num_queries(10) as queries:
        assert cache_state(client, top_url(two_snapshots)) == "hit"
    read = " ".join(query["sql"] for query in queries.captured_queries)
    assert "django_session" in read and "auth_user" in read and "pganalytics_snapshot" in read


def rename(database):
    database.name = "renamed"
    database.save()  # as the admin's change form does


def fail_collection(database):
    MonitoredDatabase.objects.filter(pk=database.pk).update(dsn="host=127.0.0.1 port=1 dbname=x")
    with pytest.raises(CollectionError):
        collect(MonitoredDatabase.objects.get(pk=database.pk))


def compact_after_retention(database):
    done = history.compact(now=timezone.now() + timedelta(days=400))
    assert done.dropped_raw  # the retention dropped history: answers over it change


CHANGES = {
    "a snapshot two_snapshots": lambda database: collect(database),
    "a collection failed": fail_collection,
    "the database edited": rename,
    "a snapshot deleted": lambda database: database.snapshots.order_by("taken_at")[0].delete(),
    "history dropped by retention": compact_after_retention,
}


@pytest.mark.parametrize("change", CHANGES)
def test_every_change_moves_the_data_version(tier, client, analyst, two_snapshots, change):
    url = top_url(two_snapshots)
    cache_state(client, url)
    assert cache_state(client, url) == "hit"
    assert cache_state(client, "/api/v1/anomalies/") == "miss"
    CHANGES[change](two_snapshots)
    assert cache_state(client, url) == "miss"
    assert cache_state(client, "/api/v1/anomalies/") == "miss"  # the list of all moved too
    assert cache_state(client, url) == "hit"


def test_a_deleted_database_moves_the_version_of_all(tier, client, analyst, two_snapshots):
    cache_state(client, "/api/v1/anomalies/")
    assert cache_state(client, "/api/v1/anomalies/") == "hit"
    two_snapshots.delete()
    assert cache_state(client, "/api/v1/anomalies/") == "miss"
    assert client.get(top_url(two_snapshots)).status_code == 404


def test_a_collection_in_another_process_reaches_this_one(tier, client, analyst, two_snapshots):
    url = top_url(two_snapshots)
    cache_state(client, url)
    assert cache_state(client, url) == "hit"
    subprocess.run(
        [sys.executable, "manage.py", "collect", "--database", two_snapshots.name],
        env={**child_environment(), "CACHE_L2_URL": tier}, check=True, timeout=120,
        capture_output=True,
    )
    eventually(lambda: cache_state(client, url) == "miss")


def remove_from_group(user):
    user.groups.clear()


def remove_from_the_group_permission(user):
    Group.objects.get(name="Analytics viewers").permissions.remove(
        Permission.objects.get(codename="view_analytics")
    )


def delete_group(user):
    Group.objects.get(name="Analytics viewers").delete()


REVOCATIONS = {
    "removed from the group": remove_from_group,
    "the permission removed from the group": remove_from_the_group_permission,
    "the group deleted": delete_group,
}


@pytest.mark.parametrize("revocation", REVOCATIONS)
def test_a_permission_removed_takes_effect_at_once(
    tier, client, analyst, two_snapshots, revocation
):
    url = top_url(two_snapshots)
    cache_state(client, url)
    assert cache_state(client, url) == "hit"
    REVOCATIONS[revocation](analyst)
    assert client.get(url).status_code == 403


def change_password(user):
    user.set_password("another")
    user.save()


def deactivate(user):
    user.is_active = False
    user.save()


@pytest.mark.parametrize("change", [change_password, deactivate])
def test_a_password_change_or_deactivation_logs_the_user_out(
    tier, client, analyst, two_snapshots, change
):
    cache_state(client, top_url(two_snapshots))
    change(analyst)
    assert client.get(top_url(two_snapshots)).status_code == 401


def test_a_logout_ends_the_session_in_every_process(tier, client, analyst, two_snapshots):
    cache_state(client, top_url(two_snapshots))
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    client.post("/logout/")
    client.cookies[django_settings.SESSION_COOKIE_NAME] = cookie  # the old cookie, replayed
    assert client.get(top_url(two_snapshots)).status_code == 401


def test_a_cache_that_lost_them_falls_back_to_the_database(tier, client, analyst, two_snapshots):
    url = top_url(two_snapshots)
    cache_state(client, url)
    assert cache_state(client, url) == "hit"
    for name in ("sessions", "users"):
        registry.clear(name)
        assert cache_state(client, url) == "hit"  # still logged in, still allowed
    registry.clear("versions")
    assert cache_state(client, url) == "miss"  # a new version, never an older answer
