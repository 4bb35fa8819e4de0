"""CACHES for the named caches, built from their TTLs and one size, so settings stay one line."""

BACKEND = "caching.backends.TTLLRUCache"
TIERED_BACKEND = "caching.tiered.TieredCache"
PASS_THROUGH_BACKEND = "django.core.cache.backends.dummy.DummyCache"


def named_caches(ttls, *, max_entries, enabled=True, l2_url="", key_prefix=""):
    """A CACHES dict: `default` plus one alias per name in `ttls` (seconds), keys prefixed
    with `key_prefix` (Django's KEY_PREFIX).

    With `l2_url` (redis://...), each is a TieredCache: memory in front of that Redis,
    coherent across processes.

    CULL_FREQUENCY equal to MAX_ENTRIES makes a full cache evict exactly one least
    recently used entry per new key (Django culls `len // CULL_FREQUENCY`), which is the
    LRU behaviour the named caches want. Disabled, every alias passes through (DummyCache).
    """
    caches = {}
    for alias, ttl in {"default": 300.0, **ttls}.items():
        if not enabled:
            caches[alias] = {"BACKEND": PASS_THROUGH_BACKEND, "TIMEOUT": ttl}
            continue
        options = {"MAX_ENTRIES": max_entries, "CULL_FREQUENCY": max_entries}
        if l2_url:
            options["L2_URL"] = l2_url
        caches[alias] = {
            "BACKEND": TIERED_BACKEND if l2_url else BACKEND,
            "LOCATION": alias,
            "TIMEOUT": ttl,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": options,
        }
    return caches
