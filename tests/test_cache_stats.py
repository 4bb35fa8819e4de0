"""`cache_stats`: figures of this process or of a running server, and clearing."""

import io
import json

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command

from caching import registry


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


def stats(*arguments):
    out = io.StringIO()
    call_command("cache_stats", *arguments, stdout=out)
    return out.getvalue()


def by_name(report):
    return {row["name"]: row for row in report["caches"]}


def test_json_figures_and_totals_of_this_process():
    caches["explain"].set("a", 1)
    caches["explain"].get("a")
    report = json.loads(stats("--json"))
    explain = by_name(report)["explain"]
    assert explain["entries"] == 1 and explain["hits"] == caches["explain"].metrics()["hits"]
    assert report["totals"]["entries"] == 1 and report["cleared"] == {}
    assert report["totals"]["max_entries"] == sum(r["max_entries"] for r in report["caches"])


def test_the_table_has_a_line_per_cache_and_a_total():
    lines = stats().splitlines()
    assert lines[0].split()[:3] == ["cache", "entries", "max_entries"]
    assert [line.split()[0] for line in lines[1:]] == [*registry.names(), "total"]


def test_clear_one_and_clear_all():
    caches["features"].set("a", 1)
    caches["responses"].set("b", 1)
    assert stats("--clear", "features").splitlines()[0] == "cleared features: 1 entry"
    assert caches["responses"].get("b") == 1
    report = json.loads(stats("--clear-all", "--json"))
    assert report["cleared"]["responses"] == 1 and report["totals"]["entries"] == 0


def test_an_unknown_cache_and_both_clear_options_are_refused():
    with pytest.raises(CommandError, match="no cache named 'nope'"):
        stats("--clear", "nope")
    with pytest.raises(CommandError, match="not allowed with"):
        stats("--clear", "features", "--clear-all")


def test_a_running_servers_figures_come_from_its_metrics(live_server):
    caches["anomalies"].set("a", 0)
    caches["anomalies"].get("a")  # the live server runs in this process: same caches
    report = json.loads(stats("--server", live_server.url, "--json"))
    anomalies = by_name(report)["anomalies"]
    assert anomalies["entries"] == 1
    assert anomalies["hits"] == caches["anomalies"].metrics()["hits"]
    with pytest.raises(CommandError, match="do not go through --server"):
        stats("--server", live_server.url, "--clear-all")


def test_a_server_that_limits_metrics_is_read_with_its_token(live_server, settings):
    settings.METRICS_ALLOWED_ADDRESSES, settings.METRICS_TOKEN = (), "s3cret"
    assert "anomalies" in by_name(json.loads(stats("--server", live_server.url, "--json")))
    with pytest.raises(CommandError, match="403"):
        stats("--server", live_server.url, "--token", "wrong")


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(CommandError, match="127.0.0.1:1/metrics"):
        stats("--server", "http://127.0.0.1:1")
