"""TTLLRUCache: LocMemCache's documented behaviour, plus TTL sweeping, LRU eviction and metrics."""

import asyncio
import itertools
import pickle
import random
import threading
import time
import uuid
import warnings

import pytest
from django.core.cache import CacheKeyWarning, caches
from django.core.cache.backends.locmem import LocMemCache

from caching.backends import NEVER, TTLLRUCache


def make(timeout=300, **options):
    params = {"TIMEOUT": timeout, "OPTIONS": options}
    for name in ("KEY_PREFIX", "VERSION", "KEY_FUNCTION"):
        if name in options:
            params[name] = options.pop(name)
    return TTLLRUCache(f"test-{uuid.uuid4()}", params)


class Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("not today")


# --- the BaseCache API -------------------------------------------------------------------


def test_set_get_add_delete_has_key():
    cache = make()
    assert cache.get("missing") is None
    assert cache.get("missing", "fallback") == "fallback"
    cache.set("a", {"x": 1})
    assert cache.get("a") == {"x": 1}
    assert cache.has_key("a") and not cache.has_key("b")
    assert cache.add("a", "other") is False
    assert cache.get("a") == {"x": 1}
    assert cache.add("b", 2) is True and cache.get("b") == 2
    assert cache.delete("a") is True
    assert cache.delete("a") is False
    assert cache.get("a") is None


def test_many_variants_and_get_or_set():
    cache = make()
    assert cache.set_many({"a": 1, "b": [2], "c": None}) == []
    assert cache.get_many(["a", "b", "c", "d"]) == {"a": 1, "b": [2], "c": None}
    cache.delete_many(["a", "c"])
    assert cache.get_many(["a", "b", "c"]) == {"b": [2]}
    assert cache.get_or_set("e", lambda: "computed") == "computed"
    assert cache.get_or_set("e", "ignored") == "computed"
    assert cache.get_or_set("f", 7) == 7


def test_incr_decr_keep_the_ttl_and_reject_missing_keys():
    cache = make()
    cache.set("n", 10, timeout=0.2)
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n", 6) == 10
    assert cache.get("n") == 10
    with pytest.raises(ValueError, match="not found"):
        cache.incr("absent")
    time.sleep(0.25)
    with pytest.raises(ValueError):
        cache.incr("n")


def test_clear_and_close():
    cache = make()
    cache.set_many({"a": 1, "b": 2})
    assert cache.clear_counting() == 2
    assert cache.get("a") is None
    cache.close()
    cache.close()
    cache.set("a", 1)
    assert cache.get("a") == 1


def test_versions_and_prefixes_are_isolated():
    cache = make(VERSION=1, KEY_PREFIX="p")
    cache.set("k", "v1")
    cache.set("k", "v2", version=2)
    assert cache.get("k") == "v1" and cache.get("k", version=2) == "v2"
    assert cache.incr_version("k") == 2
    assert cache.get("k") is None and cache.get("k", version=2) == "v1"
    assert cache.decr_version("k", version=2) == 1
    assert cache.get("k") == "v1"
    other = TTLLRUCache(cache.location, {"KEY_PREFIX": "q"})
    assert other.get("k") is None
    other.set("k", "q-value")
    assert cache.get("k") == "v1"


def test_custom_key_function_is_used():
    cache = make(KEY_FUNCTION=lambda key, prefix, version: f"custom|{key}")
    cache.set("k", 1)
    assert list(cache._store.entries) == ["custom|k"]
    assert cache.get("k") == 1


def test_caches_with_the_same_location_share_one_store():
    first = make()
    second = TTLLRUCache(first.location, {})
    third = make()
    first.set("k", "shared")
    assert second.get("k") == "shared"
    assert third.get("k") is None


def test_key_warnings_match_locmem():
    cache, reference = make(), LocMemCache("ref", {})
    for key in ("with space", "x" * 260, "tab\tkey", "\x7f"):
        for backend in (cache, reference):
            with pytest.warns(CacheKeyWarning):
                backend.set(key, 1)
    for key in ("plain:key", "ünïcode"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheKeyWarning)
            cache.set(key, 1)
            reference.set(key, 1)


# --- isolation ---------------------------------------------------------------------------


def test_values_are_isolated_from_callers():
    cache = make()
    value = {"rows": [1, 2]}
    cache.set("k", value)
    value["rows"].append(3)
    read = cache.get("k")
    assert read == {"rows": [1, 2]}
    read["rows"].append(4)
    assert cache.get("k") == {"rows": [1, 2]}
    assert cache.get("k") is not cache.get("k")


def test_immutable_values_round_trip_unchanged():
    cache = make()
    for value in ("text", b"bytes", 0, 1.5, True, False, None, 2j, ""):
        cache.set("k", value)
        read = cache.get("k", "missing")
        assert read == value and type(read) is type(value)


def test_unpicklable_values_raise_as_locmem_does():
    cache, reference = make(), LocMemCache("ref-unpicklable", {})
    for backend in (cache, reference):
        with pytest.raises(pickle.PicklingError):
            backend.set("k", Unpicklable())
        with pytest.raises(TypeError):
            backend.set("k", threading.Lock())
    assert cache.get("k") is None


# --- TTL ---------------------------------------------------------------------------------


def test_timeout_none_never_expires_and_zero_expires_at_once():
    cache = make(timeout=1)  # Django reads TIMEOUT as whole seconds
    cache.set("forever", 1, timeout=None)
    cache.set("now", 1, timeout=0)
    cache.set("default", 1)
    assert cache.get("now") is None
    assert cache.add("now", 2, timeout=0) is True and cache.get("now") is None
    assert cache.get("default") == 1
    time.sleep(1.05)
    assert cache.get("default") is None
    assert cache.get("forever") == 1


def test_touch_renews_or_reports_missing():
    cache = make()
    cache.set("k", 1, timeout=0.1)
    assert cache.touch("k", timeout=None) is True
    time.sleep(0.15)
    assert cache.get("k") == 1
    assert cache.touch("absent") is False
    cache.touch("k", timeout=0)
    assert cache.get("k") is None


def test_expired_entries_are_swept_by_writes_without_being_read():
    cache = make(MAX_ENTRIES=1000)
    for i in range(20):
        cache.set(f"short:{i}", i, timeout=0.05)
    time.sleep(0.1)
    cache.set("trigger", 1)
    store = cache._store
    assert len(store.entries) == 1
    assert store.expirations == 20
    assert store.misses == 0


def test_metrics_snapshot_sweeps_expired_entries():
    cache = make()
    cache.set("short", 1, timeout=0.05)
    time.sleep(0.1)
    metrics = cache.metrics()
    assert metrics["entries"] == 0 and metrics["expirations"] == 1


def test_rewriting_a_key_does_not_expire_it_with_its_old_ttl():
    cache = make()
    cache.set("k", 1, timeout=0.05)
    cache.set("k", 2, timeout=None)
    time.sleep(0.1)
    cache.set("other", 1)
    assert cache.get("k") == 2


def test_expiry_heap_stays_bounded_under_rewrites_and_touches():
    cache = make()
    for i in range(10_000):
        cache.set("hot", i)
    assert len(cache._store.expiry_heap) <= 2 * len(cache._store.entries) + 64
    for _ in range(10_000):
        cache.touch("hot", 60)
    assert len(cache._store.expiry_heap) <= 2 * len(cache._store.entries) + 64
    assert cache.get("hot") == 9999


def test_an_expired_key_is_absent_for_delete_too():
    cache, reference = make(), LocMemCache("ref-expired-delete", {})
    for backend in (cache, reference):
        backend.set("k", 1, timeout=0.01)
    time.sleep(0.05)
    assert cache.delete("k") is False  # LocMemCache says True for the entry it still holds
    assert reference.delete("k") is True
    assert cache.metrics()["deletes"] == 0 and cache.metrics()["expirations"] == 1


# --- eviction ----------------------------------------------------------------------------


def test_lru_order_decides_what_is_evicted():
    cache = make(MAX_ENTRIES=3, CULL_FREQUENCY=3)
    for key in "abc":
        cache.set(key, key)
    cache.get("a")
    cache.set("b", "b2")
    cache.set("d", "d")
    assert not cache.has_key("c")
    assert all(cache.has_key(key) for key in "abd")
    assert cache.metrics()["evictions"] == 1


def test_cull_frequency_removes_a_fraction_or_everything():
    cache = make(MAX_ENTRIES=9, CULL_FREQUENCY=3)
    for i in range(10):
        cache.set(i, i)
    assert len(cache._store.entries) == 7
    assert [cache.has_key(i) for i in range(3)] == [False, False, False]
    everything = make(MAX_ENTRIES=5, CULL_FREQUENCY=0)
    for i in range(6):
        everything.set(i, i)
    assert list(everything._store.entries) == [":1:5"]
    assert everything.metrics()["evictions"] == 5


def test_full_cache_drops_expired_entries_before_live_ones():
    cache = make(MAX_ENTRIES=3, CULL_FREQUENCY=3)
    cache.set("live1", 1)
    cache.set("dying", 1, timeout=0.05)
    cache.set("live2", 1)
    time.sleep(0.1)
    cache.set("new", 1)
    assert cache.has_key("live1") and cache.has_key("live2") and cache.has_key("new")
    assert cache.metrics()["evictions"] == 0


def test_cull_frequency_one_empties_and_max_entries_zero_keeps_the_newest():
    everything = make(MAX_ENTRIES=4, CULL_FREQUENCY=1)
    for i in range(5):
        everything.set(i, i)
    assert list(everything._store.entries) == [":1:4"]
    tiny = make(MAX_ENTRIES=0, CULL_FREQUENCY=3)  # LocMemCache would grow without bound
    for i in range(3):
        tiny.set(i, i)
    assert tiny.get(2) == 2 and len(tiny._store.entries) == 1


def test_overwriting_a_key_in_a_full_cache_evicts_nothing():
    cache = make(MAX_ENTRIES=3, CULL_FREQUENCY=3)
    for key in "abc":
        cache.set(key, key)
    cache.set("a", "again")
    assert [cache.get(key) for key in "abc"] == ["again", "b", "c"]
    assert cache.metrics()["evictions"] == 0


def test_entries_never_exceed_max_entries():
    cache = make(MAX_ENTRIES=50, CULL_FREQUENCY=50)
    for i in range(500):
        cache.set(i, i)
        assert len(cache._store.entries) <= 50
    assert cache.metrics()["evictions"] == 450


# --- metrics -----------------------------------------------------------------------------


def test_metrics_arithmetic_counts_falsy_values_as_hits():
    cache = make(MAX_ENTRIES=10)
    for key, value in [("zero", 0), ("empty", ""), ("list", []), ("false", False), ("none", None)]:
        cache.set(key, value)
    for key in ("zero", "empty", "list", "false", "none"):
        assert cache.get(key, "missing") != "missing"
    cache.get("absent")
    cache.delete("zero")
    cache.delete("absent")
    metrics = cache.metrics()
    assert metrics["hits"] == 5 and metrics["misses"] == 1 and metrics["gets"] == 6
    assert metrics["hit_ratio"] == pytest.approx(5 / 6)
    assert metrics["sets"] == 5 and metrics["deletes"] == 1
    assert metrics["entries"] == 4 and metrics["max_entries"] == 10
    assert metrics["last_clear"] is None
    cache.clear()
    metrics = cache.metrics()
    assert metrics["entries"] == 0 and metrics["hits"] == 5 and metrics["last_clear"] > 0


# --- concurrency -------------------------------------------------------------------------


def test_get_or_set_counts_one_get_per_call():
    cache = make()
    assert cache.get_or_set("k", lambda: 0) == 0
    assert cache.get_or_set("k", lambda: 1) == 0  # a falsy value is a hit
    metrics = cache.metrics()
    assert (metrics["gets"], metrics["hits"], metrics["misses"], metrics["sets"]) == (2, 1, 1, 1)


def test_get_or_set_computes_once_for_concurrent_misses():
    cache = make()
    calls = []
    barrier = threading.Barrier(10)

    def slow():
        calls.append(1)
        time.sleep(0.1)
        return {"value": 42}

    def worker(results):
        barrier.wait()
        results.append(cache.get_or_set("shared", slow))

    results = []
    threads = [threading.Thread(target=worker, args=(results,)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [{"value": 42}] * 10
    assert len(cache._store.flights) == 0


def test_get_or_set_returns_what_another_writer_stored_meanwhile_as_django_does():
    cache, reference = make(), LocMemCache("ref-get-or-set-race", {})
    for backend in (cache, reference):

        def compute(backend=backend):
            backend.set("k", "theirs")
            return "mine"

        assert backend.get_or_set("k", compute) == "theirs"


def test_get_or_set_may_ask_for_its_own_key_again():
    cache, reference = make(), LocMemCache("ref-get-or-set-nested", {})
    outcomes = []
    for backend in (cache, reference):
        worker = threading.Thread(
            target=lambda b=backend: outcomes.append(
                b.get_or_set("k", lambda: b.get_or_set("k", 1) + 1)
            ),
            daemon=True,
        )
        worker.start()
        worker.join(timeout=5)
        assert not worker.is_alive(), "get_or_set waited for itself"
    assert outcomes == [1, 1]


def test_async_get_or_set_computes_once_and_counts_one_get():
    cache = make()
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)
        return "v"

    async def scenario():
        return await asyncio.gather(*(cache.aget_or_set("k", slow) for _ in range(5)))

    assert asyncio.run(scenario()) == ["v"] * 5
    assert len(calls) == 1
    metrics = cache.metrics()
    assert (metrics["gets"], metrics["hits"], metrics["misses"], metrics["sets"]) == (5, 4, 1, 1)


def test_many_threads_keep_the_invariants():
    cache = make(MAX_ENTRIES=200, CULL_FREQUENCY=4)
    errors, gets_done, sizes_seen = [], [], []

    def worker(seed):
        rng = random.Random(seed)
        gets = 0
        try:
            for _ in range(3000):
                key = rng.randrange(400)
                action = rng.random()
                if action < 0.5:
                    cache.get(key)
                    gets += 1
                elif action < 0.8:
                    cache.set(key, {"k": key}, timeout=rng.choice([None, 0.01, 5]))
                elif action < 0.9:
                    cache.delete(key)
                else:
                    cache.get_or_set(key, lambda: key)
                    gets += 1
                sizes_seen.append(len(cache._store.entries))
        except Exception as error:  # noqa: BLE001 - the test reports any failure below
            errors.append(error)
        gets_done.append(gets)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics = cache.metrics()
    assert errors == []
    assert max(sizes_seen) <= 200
    assert metrics["gets"] == sum(gets_done)  # get_or_set counts once, hit or miss
    store = cache._store
    scheduled = {(expires_at, key) for expires_at, key in store.expiry_heap}
    assert all(
        (entry[1], key) in scheduled for key, entry in store.entries.items() if entry[1] != NEVER
    )


def test_same_results_as_locmem_on_a_random_sequence():
    cache, reference = make(MAX_ENTRIES=10_000), LocMemCache("ref-seq", {"TIMEOUT": 300})
    rng = random.Random(7)
    for step in itertools.count():
        if step == 5000:
            break
        key, value = f"k{rng.randrange(50)}", {"step": step}
        op = rng.choice(["get", "set", "add", "delete", "has_key", "touch"])
        args = (key, value) if op in ("set", "add") else (key,)
        assert getattr(cache, op)(*args) == getattr(reference, op)(*args), (step, op, key)


# --- async -------------------------------------------------------------------------------


def test_async_api():
    cache = make()

    async def scenario():
        await cache.aset("a", [1])
        assert await cache.aget("a") == [1]
        assert await cache.aadd("a", 2) is False
        assert await cache.ahas_key("a")
        await cache.aset_many({"b": 2, "c": 3})
        assert await cache.aget_many(["a", "b", "c"]) == {"a": [1], "b": 2, "c": 3}
        assert await cache.aincr("b") == 3
        assert await cache.atouch("c", None) is True
        assert await cache.aget_or_set("d", lambda: 4) == 4
        assert await cache.adelete("a") is True
        await cache.adelete_many(["b", "c"])
        await cache.aclear()
        await cache.aclose()
        return await cache.aget("d")

    assert asyncio.run(scenario()) is None


# --- the configured named caches ---------------------------------------------------------


def test_named_caches_are_configured_with_their_ttls(settings):
    expected = {
        "features": 900,
        "predictions": 300,
        "fingerprints": 600,
        "explain": 1800,
        "anomalies": 300,
        "responses": 600,
        "advisor": 1800,
        "default": 300,
    }
    for name, ttl in expected.items():
        assert caches[name].default_timeout == ttl
        assert isinstance(caches[name], TTLLRUCache)
        assert caches[name].metrics()["max_entries"] == settings.CACHE_MAX_SIZE
