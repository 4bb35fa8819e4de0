"""CACHES for the named caches, built from their TTLs and one size, so settings stay one line."""

BACKEND = "caching.backends.TTLLRUCache"
PASS_THROUGH_BACKEND = "django.core.cache.backends.dummy.DummyCache"


def named_caches(ttls, *, max_entries, enabled=True):
    """A CACHES dict: `default` plus one alias per name in `ttls` (seconds).

    CULL_FREQUENCY equal to MAX_ENTRIES makes a full cache evict exactly one least
    recently used entry per new key (Django culls `len // CULL_FREQUENCY`), which is the
    LRU behaviour the named caches want. Disabled, every alias passes through (DummyCache).
    """
    caches = {}
    for alias, ttl in {"default": 300.0, **ttls}.items():
        if not enabled:
            caches[alias] = {"BACKEND": PASS_THROUGH_BACKEND, "TIMEOUT": ttl}
            continue
        caches[alias] = {
            "BACKEND": BACKEND,
            "LOCATION": alias,
            "TIMEOUT": ttl,
            "OPTIONS": {"MAX_ENTRIES": max_entries, "CULL_FREQUENCY": max_entries},
        }
    return caches
