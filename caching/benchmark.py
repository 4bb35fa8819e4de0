"""Side-by-side cache benchmarks through the Django cache API (used by `bench_cache`).

The workload is generated up front so that every backend replays the same operations and
the random number generator is not what gets measured.
"""

import random
import time
from dataclasses import dataclass

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from caching.backends import TTLLRUCache
from caching.tiered import TieredCache

VALUE = {"fingerprint": "a1b2c3d4e5f60718", "mean_ms": 12.5, "calls": 1042, "rows": 3}
CHUNK = 10_000


@dataclass
class Result:
    backend: str
    ops: int
    seconds: float
    hits: int
    gets: int

    @property
    def ops_per_second(self):
        return self.ops / self.seconds

    @property
    def us_per_op(self):
        return self.seconds / self.ops * 1e6

    @property
    def hit_ratio(self):
        return self.hits / self.gets if self.gets else None


def hot_cold_keys(n_keys, n_reads, *, hot_fraction=0.2, hot_share=0.8, seed=1):
    """Keys of `n_reads` reads: `hot_share` of them on the first `hot_fraction` of the keys."""
    rng = random.Random(seed)
    hot = max(1, int(n_keys * hot_fraction))
    return [
        f"bench:{rng.randrange(hot) if rng.random() < hot_share else rng.randrange(hot, n_keys)}"
        for _ in range(n_reads)
    ]


def make_backend(kind, location, *, max_entries, cull_frequency=3, redis_url=None):
    params = {
        "TIMEOUT": 300,
        "OPTIONS": {"MAX_ENTRIES": max_entries, "CULL_FREQUENCY": cull_frequency},
    }
    if kind == "TTLLRUCache":
        return TTLLRUCache(location, params)
    if kind == "LocMemCache":
        return LocMemCache(location, params)
    if kind == "RedisCache":
        return RedisCache(redis_url, {"TIMEOUT": 300, "KEY_PREFIX": location})
    if kind == "TieredCache":
        return TieredCache(location, {**params, "OPTIONS": {**params["OPTIONS"], "L2_URL": redis_url}})
    raise ValueError(f"unknown backend {kind!r}")


def discard(cache, keys):
    """Drop what a run stored: on Redis only its own keys (RedisCache.clear() is a FLUSHDB
    of a database that may hold other data)."""
    if isinstance(cache, (RedisCache, TieredCache)):
        cache.delete_many(sorted(set(keys)))
    else:
        cache.clear()


def run_read_through(cache, keys, name, progress=None):
    """Each read is a get; a miss is followed by a set of the value (a read-through)."""
    missing = object()
    hits = ops = 0
    get, set_ = cache.get, cache.set
    started = time.perf_counter()
    for start in range(0, len(keys), CHUNK):
        for key in keys[start : start + CHUNK]:
            if get(key, missing) is missing:
                set_(key, VALUE)
                ops += 1
            else:
                hits += 1
        if progress is not None:
            progress(min(CHUNK, len(keys) - start))
    seconds = time.perf_counter() - started
    return Result(name, ops + len(keys), seconds, hits, len(keys))


def run_full_cache_sets(cache, size, n_sets, name, progress=None):
    """Fill the cache to `size`, then time `n_sets` sets of new keys into the full cache."""
    set_ = cache.set
    for i in range(size):
        set_(f"fill:{i}", VALUE)
    started = time.perf_counter()
    for start in range(0, n_sets, CHUNK):
        for i in range(start, min(start + CHUNK, n_sets)):
            set_(f"new:{i}", VALUE)
        if progress is not None:
            progress(min(CHUNK, n_sets - start))
    seconds = time.perf_counter() - started
    return Result(name, n_sets, seconds, 0, 0)
