"""The `responses` cache keys on what the views read, as parsed: junk parameters add no
entries, spellings of one window share one, and a parameter given twice is refused."""

import json

import pytest
from django.core.cache import caches

from caching import registry


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture
def queries_url(unreachable):
    return f"/api/v1/databases/{unreachable.id}/queries/"


def entries():
    return caches["responses"].metrics()["entries"]


def x_cache(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response["X-Cache"]


def test_unknown_parameters_add_no_entries(viewer_client, queries_url):
    url = queries_url + "?order=calls"
    assert x_cache(viewer_client, url) == "miss"
    assert [x_cache(viewer_client, f"{url}&junk{n}={n}") for n in range(50)] == ["hit"] * 50
    assert x_cache(viewer_client, "/api/v1/anomalies/") == "miss"
    assert x_cache(viewer_client, "/api/v1/anomalies/?page=2&window=junk") == "hit"
    assert entries() == 2


def test_spellings_of_one_window_share_an_entry(viewer_client, queries_url):
    assert x_cache(viewer_client, queries_url) == "miss"  # the defaults: 24h, total
    for same in ["?window=24h", "?window=1d", "?window=86400&order=total", "?window=1440m"]:
        assert x_cache(viewer_client, queries_url + same) == "hit", same
    assert x_cache(viewer_client, queries_url + "?window=2d") == "miss"
    assert x_cache(viewer_client, queries_url + "?order=mean") == "miss"
    assert entries() == 3


@pytest.mark.parametrize(
    "query, name",
    [("order=total&order=calls", "order"), ("window=1h&order=mean&window=1h", "window")],
)
def test_a_parameter_given_twice_is_a_400_naming_it(viewer_client, unreachable, query, name):
    response = viewer_client.get(f"/api/v1/databases/{unreachable.id}/queries/?{query}")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"error": f"{name}: given 2 times, expected once"}
    page = viewer_client.get(f"/databases/{unreachable.id}/queries/?{query}")
    assert page.status_code == 400
    text = page.content.decode()
    assert "<h1>Bad request</h1>" in text and f"{name}: given 2 times, expected once" in text
    assert entries() == 0
