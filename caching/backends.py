"""TTLLRUCache: Django's LocMemCache with per-entry TTL, O(1) LRU eviction and live metrics.

Semantics follow LocMemCache (key prefix/version/function, TIMEOUT None and 0, MAX_ENTRIES,
CULL_FREQUENCY, one store per LOCATION, values pickled so callers never share objects).
What differs is cost: the key check takes a fast path for plain keys, values of immutable
built-in types are stored as they are (sharing them is safe), eviction pops from the LRU
end of an OrderedDict instead of scanning, and expired entries are swept from a heap on
writes instead of lingering until read.

Where LocMemCache is loose, this backend is strict: MAX_ENTRIES is a hard bound (a cull
drops at least one entry, and expired entries go before live ones; overwriting a key
culls nothing; MAX_ENTRIES 0 keeps just the newest entry), an expired key is absent for
`delete` too (False), and `get_or_set` calls `default` once for concurrent misses of a key.
"""

import heapq
import pickle
import threading
import time
from collections import OrderedDict

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    MEMCACHE_MAX_KEY_LENGTH,
    BaseCache,
    default_key_func,
)

from caching.singleflight import KeyedLocks

NEVER = float("inf")
SWEEP_PER_WRITE = 32
IMMUTABLE_TYPES = frozenset({str, bytes, int, float, bool, complex, type(None)})

_clock = time.monotonic
_stores = {}
_stores_lock = threading.Lock()
_MISSING = object()


class Store:
    """One LOCATION's entries (LRU order, oldest first), expiry heap and counters.

    Every method that touches state expects the caller to hold `lock`. An entry is
    `(payload, expires_at, pickled)`; the heap holds `(expires_at, key)` and may keep
    stale pairs for keys rewritten since, recognised by a differing `expires_at`.
    """

    __slots__ = (
        "lock", "entries", "expiry_heap", "flights", "hits", "misses", "sets", "deletes",
        "evictions", "expirations", "last_clear",
    )

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = OrderedDict()
        self.expiry_heap = []
        self.flights = KeyedLocks()
        self.hits = self.misses = self.sets = self.deletes = 0
        self.evictions = self.expirations = 0
        self.last_clear = None

    def live(self, key, now):
        """The entry under `key`, or None; an expired one is removed on the way."""
        entry = self.entries.get(key)
        if entry is not None and entry[1] <= now:
            del self.entries[key]
            self.expirations += 1
            return None
        return entry

    def put(self, key, entry, now, max_entries, cull_frequency):
        entries = self.entries
        if key not in entries and len(entries) >= max_entries:
            self.sweep(now, limit=None)
            if len(entries) >= max_entries:
                self.cull(cull_frequency)
        entries[key] = entry
        entries.move_to_end(key)
        self.sets += 1
        self.schedule(key, entry[1], now)

    def schedule(self, key, expires_at, now):
        """Record when `key` expires; sweep a little when something is due, or when the heap
        holds more stale pairs than live ones."""
        heap = self.expiry_heap
        if expires_at != NEVER:
            heapq.heappush(heap, (expires_at, key))
        if heap and (heap[0][0] <= now or len(heap) > 2 * len(self.entries) + 64):
            self.sweep(now, limit=SWEEP_PER_WRITE)

    def cull(self, cull_frequency):
        """Drop the least recently used 1/cull_frequency of the entries, at least one (all
        for 0)."""
        entries = self.entries
        if cull_frequency == 0:
            self.evictions += len(entries)
            self.remove_all()
            return
        for _ in range(min(len(entries), max(1, len(entries) // cull_frequency))):
            entries.popitem(last=False)
            self.evictions += 1

    def sweep(self, now, limit):
        """Remove entries whose TTL has passed, at most `limit` heap pops (None: all)."""
        heap, entries = self.expiry_heap, self.entries
        while heap and heap[0][0] <= now and limit != 0:
            expires_at, key = heapq.heappop(heap)
            entry = entries.get(key)
            if entry is not None and entry[1] == expires_at:
                del entries[key]
                self.expirations += 1
            if limit is not None:
                limit -= 1
        if len(heap) > 2 * len(entries) + 64:
            heap[:] = [(e[1], k) for k, e in entries.items() if e[1] != NEVER]
            heapq.heapify(heap)

    def remove_all(self):
        count = len(self.entries)
        self.entries.clear()
        self.expiry_heap.clear()
        return count


def _unpack(entry):
    """The value an entry holds (get() inlines this on its hot path)."""
    return pickle.loads(entry[0]) if entry[2] else entry[0]


def store_for(location):
    with _stores_lock:
        store = _stores.get(location)
        if store is None:
            store = _stores[location] = Store()
        return store


class TTLLRUCache(BaseCache):
    """A drop-in for LocMemCache that is faster, evicts in O(1) and counts what it does."""

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, name, params):
        super().__init__(params)
        self.location = name
        self._store = store_for(name)

    def make_and_validate_key(self, key, version=None):
        # The hot path of every call: Django's default key function inlined, and a plain
        # printable ASCII key without spaces (which can raise no memcached warning) skips
        # the per-character loop of BaseCache.validate_key, which costs more than a lookup.
        if version is None:
            version = self.version
        if self.key_func is default_key_func:
            key = f"{self.key_prefix}:{version}:{key}"
        else:
            key = self.key_func(key, self.key_prefix, version)
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or not key.isascii() or not key.isprintable() or (
            " " in key
        ):
            self.validate_key(key)
        return key

    def _expires_at(self, timeout):
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return NEVER if timeout is None else _clock() + timeout

    def _entry(self, value, timeout):
        expires_at = self._expires_at(timeout)
        if type(value) in IMMUTABLE_TYPES:
            return (value, expires_at, False)
        return (pickle.dumps(value, self.pickle_protocol), expires_at, True)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version)
        entry = self._entry(value, timeout)
        store, now = self._store, _clock()
        with store.lock:
            if store.live(key, now) is not None:
                return False
            store.put(key, entry, now, self._max_entries, self._cull_frequency)
            return True

    def get(self, key, default=None, version=None):
        key = self.make_and_validate_key(key, version)
        store, now = self._store, _clock()
        with store.lock:
            entries = store.entries
            entry = entries.get(key)
            if entry is None or entry[1] <= now:
                if entry is not None:  # expired: what Store.live does, inlined on the hot path
                    del entries[key]
                    store.expirations += 1
                store.misses += 1
                return default
            entries.move_to_end(key)
            store.hits += 1
        return pickle.loads(entry[0]) if entry[2] else entry[0]

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version)
        entry = self._entry(value, timeout)
        store, now = self._store, _clock()
        with store.lock:
            store.put(key, entry, now, self._max_entries, self._cull_frequency)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version)
        store, now = self._store, _clock()
        with store.lock:
            entry = store.live(key, now)
            if entry is None:
                return False
            expires_at = self._expires_at(timeout)
            store.entries[key] = (entry[0], expires_at, entry[2])
            store.schedule(key, expires_at, now)
            return True

    def incr(self, key, delta=1, version=None):
        key = self.make_and_validate_key(key, version)
        store, now = self._store, _clock()
        with store.lock:
            entry = store.live(key, now)
            if entry is None:
                raise ValueError("Key '%s' not found" % key)
            new_value = _unpack(entry) + delta
            store.entries[key] = (pickle.dumps(new_value, self.pickle_protocol), entry[1], True)
            store.entries.move_to_end(key)
        return new_value

    def has_key(self, key, version=None):
        key = self.make_and_validate_key(key, version)
        store, now = self._store, _clock()
        with store.lock:
            return store.live(key, now) is not None

    def delete(self, key, version=None):
        key = self.make_and_validate_key(key, version)
        store, now = self._store, _clock()
        with store.lock:
            if store.live(key, now) is None:
                return False
            del store.entries[key]
            store.deletes += 1
            return True

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """As BaseCache.get_or_set, but concurrent misses of one key call `default` once.

        Each call counts as one get: a hit, or a miss (also for the callers that waited
        for another thread's computation). As in Django, a value another writer stored
        while `default` ran wins over the computed one.
        """
        value = self.get(key, _MISSING, version=version)
        if value is not _MISSING:
            return value
        with self._store.flights.hold(self.make_key(key, version)):
            value = self._peek(key, version)
            if value is not _MISSING:
                return value
            if callable(default):
                default = default()
            if self.add(key, default, timeout=timeout, version=version):
                return default
            value = self._peek(key, version)
            return default if value is _MISSING else value

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """get_or_set in a thread: the same single flight and the same one get per call."""
        return await sync_to_async(self.get_or_set)(key, default, timeout, version)

    def _peek(self, key, version):
        """The live value under `key` or _MISSING, without touching LRU order or counters."""
        key = self.make_and_validate_key(key, version)
        store = self._store
        with store.lock:
            entry = store.live(key, _clock())
        return _MISSING if entry is None else _unpack(entry)

    def clear(self):
        self.clear_counting()

    def clear_counting(self):
        """Empty the store; returns how many entries it held."""
        store = self._store
        with store.lock:
            store.last_clear = time.time()
            return store.remove_all()

    def metrics(self):
        """A consistent snapshot of the counters (expired entries swept first)."""
        store = self._store
        with store.lock:
            store.sweep(_clock(), limit=None)
            gets = store.hits + store.misses
            return {
                "enabled": True,
                "tier": "local memory (this process)",
                "gets": gets,
                "hits": store.hits,
                "misses": store.misses,
                "hit_ratio": store.hits / gets if gets else 0.0,
                "sets": store.sets,
                "deletes": store.deletes,
                "evictions": store.evictions,
                "expirations": store.expirations,
                "entries": len(store.entries),
                "max_entries": self._max_entries,
                "last_clear": store.last_clear,
            }
