"""The named caches: list them with their configuration and live metrics; clear one or all."""

from django.conf import settings
from django.core.cache import caches

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


def describe(name):
    """Configuration and a metrics snapshot of one cache, as one flat dict."""
    cache = _cache(name)
    metrics = cache.metrics() if hasattr(cache, "metrics") else PASS_THROUGH_METRICS
    return {
        "name": name,
        "backend": settings.CACHES[name]["BACKEND"],
        "timeout": cache.default_timeout,
        **metrics,
    }


def describe_all():
    return [describe(name) for name in names()]


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
