"""Windows of the top queries: days and weeks up to 3660 days, ASCII digits only, and HEAD
answered wherever GET is (one cache entry for both)."""

import json

import pytest

from caching import registry
from pganalytics.config import Config, ConfigError, parse_duration

DAY = 86400


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture
def urls(unreachable):
    """The top queries' API and page."""
    return f"/api/v1/databases/{unreachable.id}/queries/", f"/databases/{unreachable.id}/queries/"


@pytest.mark.parametrize(
    "text, seconds",
    [("7d", 7 * DAY), ("2w", 14 * DAY), ("1.5d", 1.5 * DAY), (" 3660d ", 3660 * DAY)],
)
def test_days_and_weeks_are_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["\u0663h", "1\u0660m", "\uff13d", "\u0663", "1d\n1"])
def test_digits_of_other_scripts_are_not_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(ConfigError):
        Config({"FEATURE_CACHE_TTL": text}).duration("FEATURE_CACHE_TTL", "15m")


@pytest.mark.parametrize(
    "window, seconds", [("7d", 7 * DAY), ("2w", 14 * DAY), ("3660d", 3660 * DAY)]
)
def test_the_api_and_the_page_take_days_and_weeks(viewer_client, urls, window, seconds):
    api, page = urls
    response = viewer_client.get(api, {"window": window})
    assert response.status_code == 200, response.content
    assert json.loads(response.content)["window_seconds"] == seconds
    assert viewer_client.get(page, {"window": window}).status_code == 200


@pytest.mark.parametrize(
    "window, message",
    [
        ("3661d", "window='3661d': at most 3660 days"),
        ("523w", "window='523w': at most 3660 days"),
        ("\u0663h", "window='\u0663h': expected a duration"),
        ("\uff17d", "window='\uff17d': expected a duration"),
    ],
)
def test_longer_windows_and_other_digits_are_a_400(viewer_client, urls, window, message):
    api, page = urls
    response = viewer_client.get(api, {"window": window})
    assert response.status_code == 400
    assert json.loads(response.content)["error"].startswith(message)
    assert viewer_client.get(page, {"window": window}).status_code == 400


def test_the_page_offers_a_week(viewer_client, urls):
    page = viewer_client.get(urls[1], {"window": "7d"}).content.decode()
    assert 'href="?window=7d&amp;order=total" class="active"' in page


def test_head_answers_wherever_get_does_and_shares_the_cache_entry(viewer_client, urls):
    api, page = urls
    head = viewer_client.head(api + "?window=7d")
    assert head.status_code == 200 and head.content == b""
    assert head["X-Cache"] == "miss" and head["Content-Type"] == "application/json"
    get = viewer_client.get(api + "?window=7d")
    assert get["X-Cache"] == "hit" and json.loads(get.content)["window_seconds"] == 7 * DAY
    assert viewer_client.head(api + "?window=7d")["X-Cache"] == "hit"
    for other in ["/api/v1/databases/", "/api/v1/anomalies/", "/", page]:
        assert viewer_client.head(other).status_code == 200, other
