"""caching.registry over the configured named caches, and CACHE_ENABLED=false pass-through."""

import json

import pytest
from django.core.cache import caches
from django.core.management import call_command
from redis import Redis

from caching import registry
from caching.config import named_caches

BENCH_REDIS = "redis://127.0.0.1:6379/15"  # scripts/ensure-redis brings it up
NAMED = [
    "default", "features", "predictions", "fingerprints", "explain", "anomalies", "responses",
    "advisor", "sessions", "users", "versions",
]


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


def test_lists_every_named_cache_with_config_and_metrics():
    rows = {row["name"]: row for row in registry.describe_all()}
    assert sorted(rows) == sorted(NAMED)
    assert rows["explain"]["timeout"] == 1800
    assert rows["explain"]["backend"] == "caching.backends.TTLLRUCache"
    assert rows["explain"]["enabled"] is True
    assert {"hits", "misses", "entries", "max_entries", "hit_ratio"} <= set(rows["explain"])


def test_clear_one_reports_the_entries_and_leaves_the_others():
    caches["features"].set_many({"a": 1, "b": 2})
    caches["anomalies"].set("c", 3)
    assert registry.clear("features") == 2
    assert caches["features"].get("a") is None
    assert caches["anomalies"].get("c") == 3
    assert registry.describe("features")["last_clear"] is not None


def test_clear_all_reports_per_cache():
    caches["features"].set("a", 1)
    caches["responses"].set_many({"x": 1, "y": 2})
    cleared = registry.clear_all()
    assert cleared["features"] == 1 and cleared["responses"] == 2 and cleared["explain"] == 0
    assert all(registry.describe(name)["entries"] == 0 for name in NAMED)


def test_unknown_cache_names_the_configured_ones():
    with pytest.raises(registry.UnknownCache, match="configured: default, features"):
        registry.clear("nope")


def test_disabled_caching_passes_through_and_says_so(settings):
    settings.CACHES = named_caches({"features": 900.0}, max_entries=10, enabled=False)
    cache = caches["features"]
    cache.set("k", 1)
    assert cache.get("k") is None
    assert cache.get_or_set("k", lambda: 5) == 5
    row = registry.describe("features")
    assert row["enabled"] is False and row["entries"] == 0
    assert registry.clear("features") == 0


def test_with_a_second_tier_the_named_caches_are_tiered_and_described_over_processes(settings):
    settings.CACHES = named_caches(
        {"features": 900.0}, max_entries=10, l2_url="redis://127.0.0.1:6379/14"
    )
    assert settings.CACHES["features"]["BACKEND"] == "caching.tiered.TieredCache"
    caches["features"].set("k", 1)
    row = registry.describe("features")
    assert row["tier"].startswith("memory + Redis (") and row["entries"] == 1
    assert registry.describe("features", all_processes=False)["tier"] == "memory + Redis"
    assert registry.clear("features") == 1 and caches["features"].get("k") is None


def test_bench_cache_command_prints_the_ratio_to_locmem(capsys):
    call_command("bench_cache", "--keys", "200", "--reads", "2000", "--rounds", "1", "--json")
    rows = {row["backend"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"LocMemCache", "TTLLRUCache"}
    assert rows["LocMemCache"]["ratio"] == 1.0
    assert rows["TTLLRUCache"]["hit_ratio"] == rows["LocMemCache"]["hit_ratio"] > 0.5
    assert rows["TTLLRUCache"]["ratio"] > 0


def test_bench_cache_on_redis_leaves_other_keys_of_that_database_alone(capsys):
    redis = Redis.from_url(BENCH_REDIS)
    redis.set("not-the-benchmarks", "kept")
    try:
        call_command(
            "bench_cache", "--keys", "100", "--reads", "500", "--rounds", "1", "--json",
            "--redis", BENCH_REDIS,
        )
        rows = {row["backend"]: row for row in json.loads(capsys.readouterr().out)}
        for kind in ("RedisCache", "TieredCache"):
            assert rows[kind]["hit_ratio"] == rows["LocMemCache"]["hit_ratio"]
            assert rows[kind]["ratio"] > 0
        assert redis.get("not-the-benchmarks") == b"kept"
        left = [key for key in redis.keys("*bench-*") if not key.endswith(b":metrics")]
        assert left == []  # the benchmark's entries are gone (process metrics expire in 60 s)
    finally:
        redis.delete("not-the-benchmarks")
