"""The named caches: list them with their configuration and live metrics; clear one or all."""

from django.conf import settings
from django.core.cache import caches

from caching.tiered import TieredCache

PASS_THROUGH_METRICS = {
    "enabled": False,
    "tier": "pass-through (caching disabled)",
    "gets": 0,
    "hits": 0,
    "misses": 0,
    "hit_ratio": 0.0,
    "sets": 0,
    "deletes": 0,
    "evictions": 0,
    "expirations": 0,
    "entries": 0,
    "max_entries": 0,
    "last_clear": None,
}


class UnknownCache(KeyError):
    """No cache of that name is configured."""

    def __str__(self):
        return f"no cache named {self.args[0]!r}; configured: {', '.join(settings.CACHES)}"


def names():
    return list(settings.CACHES)


def _cache(name):
    if name not in settings.CACHES:
        raise UnknownCache(name)
    return caches[name]


def shared(name):
    """Whether cache `name` is one store for every process (the Redis tier): a change made
    through it in one process reaches all, so what must never be stale may be kept in it."""
    return isinstance(_cache(name), TieredCache)


def describe(name, all_processes=True):
    """Configuration and a metrics snapshot of one cache, as one flat dict: summed over the
    processes that share it when it has a second tier and `all_processes`."""
    cache = _cache(name)
    if all_processes and hasattr(cache, "metrics_all_processes"):
        metrics = cache.metrics_all_processes()
    elif hasattr(cache, "metrics"):
        metrics = cache.metrics()
    else:
        metrics = PASS_THROUGH_METRICS
    return {
        "name": name,
        "backend": settings.CACHES[name]["BACKEND"],
        "timeout": cache.default_timeout,
        **metrics,
    }


def describe_all(all_processes=True):
    return [describe(name, all_processes) for name in names()]


def clear(name):
    """Empty one cache; returns how many entries it held (0 for a pass-through cache)."""
    cache = _cache(name)
    if hasattr(cache, "clear_counting"):
        return cache.clear_counting()
    cache.clear()
    return 0


def clear_all():
    """Empty every cache; returns {name: entries it held}."""
    return {name: clear(name) for name in names()}
