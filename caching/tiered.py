"""TieredCache: a TTLLRUCache in front of a shared Redis, coherent across processes.

Reads try this process's memory, then Redis; a Redis hit refills memory with the entry's
remaining TTL. Writes go to both, and every write, delete and clear is published (see
caching.coherence) so the other processes drop their copies. A clear bumps the cache's
generation in Redis, which is part of every Redis key: the older entries become
unreachable at once, for every process, and expire on their own. Concurrent misses of a
key compute once per process (single-flight) and once across processes (a Redis lock with a
timeout). When a Redis call fails, the tier's breaker (caching.breaker) skips Redis for a
short cool-down: the cache serves from memory alone, counts the errors and the skipped calls,
and Redis forgets what this process wrote meanwhile before it is read again. The
resubscription after an outage drops the memory copies that may have gone stale.

Settings: OPTIONS["L2_URL"] (redis://...), plus TTLLRUCache's.
"""

import json
import logging
import pickle
import threading
import time
import uuid
from contextlib import contextmanager
from typing import NamedTuple

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.exceptions import ImproperlyConfigured

from caching.backends import _MISSING, TTLLRUCache, _clock
from caching.breaker import EVERYTHING
from caching.coherence import listener_for
from caching.singleflight import KeyedLocks

LOCK_SECONDS = 10  # longest a computation holds, and a waiter waits for, a key's Redis lock
METRICS_STALE_SECONDS = 5  # a process that published nothing for this long is gone
METRICS_KEY_SECONDS = 60
REDIS_FAILED = object()  # what _l2 returns when Redis did not answer or was skipped
SUMMED = (
    "gets", "hits", "misses", "sets", "deletes", "evictions", "expirations", "entries",
    "max_entries", "l2_hits", "l2_errors", "l2_skipped", "l2_trips", "l2_open",
)

logger = logging.getLogger(__name__)


class LeftLock(NamedTuple):
    """A Redis lock whose acquire failed, which Redis may still have taken (a stalled server
    runs what it had read once it resumes): released by the breaker's probe if it holds it."""

    key: str
    token: str


class Tier:
    """What the TieredCaches of one LOCATION share within a process, guarded by the L1
    store's lock: the Redis generation, and counters of the second tier."""

    def __init__(self, location, store, local_metrics):
        self.location = location
        self.store = store
        self.local_metrics = local_metrics
        self.generation = 0
        self.generation_lock = threading.Lock()  # orders reads of Redis's generation and their use
        self.invalidations = 0  # bumped whenever memory copies are dropped or rewritten
        self.writing = set()  # keys this process is writing now: refills keep off them
        self.write_locks = KeyedLocks()
        self.l2_hits = self.refills = self.l2_errors = self.l2_skipped = 0

    @property
    def generation_key(self):
        return f"caching:{self.location}:generation"

    @property
    def metrics_key(self):
        return f"caching:{self.location}:metrics"

    def l2_key(self, l1_key):
        return f"caching:{self.location}:{self.generation}:{l1_key}"

    def lock_key(self, l1_key):
        """Apart from every l2_key: a generation is a number."""
        return f"caching:{self.location}:lock:{self.generation}:{l1_key}"

    @contextmanager
    def write(self, l1_key):
        """Serialise this process's writes of `l1_key`, so memory and Redis end with the
        same value, and drop any refill that overlaps one: it may carry the old value."""
        with self.write_locks.hold(l1_key):
            with self.store.lock:
                self.writing.add(l1_key)
            try:
                yield
            finally:
                with self.store.lock:
                    self.writing.discard(l1_key)
                    self.invalidations += 1

    def changed_elsewhere(self, l1_key):
        with self.store.lock:
            self.store.entries.pop(l1_key, None)
            self.invalidations += 1

    def start_generation(self, read_generation):
        """Drop memory and take the generation `read_generation()` gets from Redis; returns
        how many entries memory held. Redis's number stands even when lower (it restarted
        empty): every process then agrees on it, and the last of concurrent reads wins."""
        with self.generation_lock:
            generation = read_generation()
            with self.store.lock:
                self.generation = generation
                self.invalidations += 1
                return self.store.remove_all()

    def resync(self, client):
        """After (re)subscribing or a clear elsewhere: start from Redis again."""
        self.start_generation(lambda: int(client.get(self.generation_key) or 0))

    def forget(self, client, unsynced, publish):
        """Make Redis forget what this process's writes left unsynced there (the breaker's
        probe; `unsynced`: L1 keys and LeftLocks, or EVERYTHING): a new generation, or DEL of
        each key; each change published through `publish(client, location, event)`, so the
        other processes drop their copies. Raises when Redis fails."""
        if unsynced is EVERYTHING:
            self.start_generation(lambda: client.incr(self.generation_key))
            publish(client, self.location, f"clear {self.generation}")
            return
        with client.pipeline(transaction=False) as pipe:
            for item in unsynced:
                if not isinstance(item, LeftLock):
                    pipe.delete(self.l2_key(item))
                    publish(pipe, self.location, f"key {item}")
            pipe.execute()
        for left in filter(lambda item: isinstance(item, LeftLock), unsynced):
            try:
                client.lock(left.key).do_release(left.token)
            except redis.exceptions.LockNotOwnedError:
                pass  # never taken, expired, or someone else's now

    def publish_metrics(self, client, token):
        figures = {"at": time.time(), **self.local_metrics()}
        with client.pipeline(transaction=False) as pipe:
            pipe.hset(self.metrics_key, token, json.dumps(figures))
            pipe.expire(self.metrics_key, METRICS_KEY_SECONDS)
            pipe.execute()

    def count_error(self, error):
        logger.warning("caching: Redis failed for %s (%s): memory only", self.location, error)
        with self.store.lock:
            self.l2_errors += 1

    def count_skipped(self):
        with self.store.lock:
            self.l2_skipped += 1


_tiers = {}
_tiers_lock = threading.Lock()


class _Held(threading.local):
    def __init__(self):
        self.lock_keys = set()  # the Redis locks this thread holds


_held = _Held()


class TieredCache(TTLLRUCache):
    """TTLLRUCache (this process) + Redis (shared), coherent across processes."""

    def __init__(self, name, params):
        super().__init__(name, params)
        url = params.get("OPTIONS", {}).get("L2_URL")
        if not url:
            raise ImproperlyConfigured(f"cache {name!r}: TieredCache needs OPTIONS['L2_URL']")
        listener = listener_for(url)
        self._listener = listener
        self._redis = listener.client
        self._token = listener.token
        self._breaker = listener.breaker
        with _tiers_lock:
            tier = _tiers.get((url, name))
            if tier is None:
                tier = _tiers[url, name] = Tier(name, self._store, self.metrics)
        self._tier = tier
        listener.register(tier)

    # --- the breaker -------------------------------------------------------------------

    def _admitted(self, unsynced=None):
        """True when this call may use Redis now; else it is counted as skipped, and what a
        write skipped (`unsynced`: an L1 key, or EVERYTHING) is remembered for the probe."""
        if self._breaker.admits(self._tier, unsynced):
            return True
        self._tier.count_skipped()
        return False

    def _failed(self, error, unsynced=None):
        """A Redis call failed: counted, logged, and Redis skipped for the breaker's cool-down."""
        self._tier.count_error(error)
        self._breaker.failed(self._tier, error, unsynced)

    # --- reading -----------------------------------------------------------------------

    def get(self, key, default=None, version=None):
        value = super().get(key, _MISSING, version=version)
        if value is not _MISSING:
            return value
        return self._from_l2(self.make_and_validate_key(key, version), default)

    def _from_l2(self, l1_key, default):
        """The value Redis holds for `l1_key` (refilling memory with its TTL), or `default`."""
        tier = self._tier
        if not self._admitted():
            return default
        with self._store.lock:
            seen, l2_key = tier.invalidations, tier.l2_key(l1_key)
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                payload, ttl_ms = pipe.get(l2_key).pttl(l2_key).execute()
        except redis.RedisError as error:
            self._failed(error)
            return default
        if payload is None or ttl_ms == -2:
            return default
        value = pickle.loads(payload)
        entry = self._entry(value, None if ttl_ms == -1 else ttl_ms / 1000)
        with self._store.lock:
            tier.l2_hits += 1
            # a write or an event that raced this read makes what it read unfit to keep
            if tier.invalidations == seen and l1_key not in tier.writing:
                self._store.put(l1_key, entry, _clock(), self._max_entries, self._cull_frequency)
                tier.refills += 1
        return value

    def has_key(self, key, version=None):
        if super().has_key(key, version=version):
            return True
        l1_key = self.make_and_validate_key(key, version)
        exists = self._l2(l1_key, lambda pipe, l2_key: pipe.exists(l2_key), publish=False)
        return exists is not REDIS_FAILED and bool(exists)

    def get_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None):
        """Concurrent misses compute once per process, then once across processes. As in
        Django, a value another writer stored while `default` ran wins over the computed one."""
        value = self.get(key, _MISSING, version=version)
        if value is not _MISSING:
            return value
        l1_key = self.make_and_validate_key(key, version)
        with self._store.flights.hold(l1_key):
            value = self._peek(key, version)
            if value is _MISSING:
                value = self._from_l2(l1_key, _MISSING)
            if value is not _MISSING:
                return value
            with self._computing(l1_key) as locked:
                if locked:  # another process may have computed it while we waited
                    value = self._from_l2(l1_key, _MISSING)
                if value is _MISSING:
                    value = default() if callable(default) else default
                    if not self.add(key, value, timeout=timeout, version=version):
                        stored = self._peek(key, version)
                        value = self._from_l2(l1_key, value) if stored is _MISSING else stored
            return value

    @contextmanager
    def _computing(self, l1_key):
        """Hold `l1_key`'s Redis lock, yielding True; or go on without it, yielding False,
        when this thread holds it already (a default() asking for its own key), Redis
        fails or is skipped, or the holder keeps it beyond LOCK_SECONDS."""
        lock_key = self._tier.lock_key(l1_key)
        if lock_key in _held.lock_keys or not self._admitted():
            yield False
            return
        lock = self._redis.lock(lock_key, timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
        left = LeftLock(lock_key, uuid.uuid4().hex)  # what Redis may hold if a call fails
        try:
            locked = lock.acquire(token=left.token)
        except redis.RedisError as error:
            self._failed(error, left)
            locked = False
        if not locked:
            yield False
            return
        _held.lock_keys.add(lock_key)
        try:
            yield True
        finally:
            _held.lock_keys.discard(lock_key)
            self._release(lock, left)

    def _release(self, lock, left):
        """Release a lock this thread took; one that Redis failed to release, or that the
        breaker skipped, the probe releases (other processes would wait on it)."""
        if not self._admitted(left):
            return
        try:
            lock.release()
        except redis.exceptions.LockNotOwnedError:
            pass  # it expired while computing: the value is stored all the same
        except redis.RedisError as error:
            self._failed(error, left)

    # --- writing -----------------------------------------------------------------------

    def _ttl_ms(self, timeout):
        """Milliseconds for Redis; None never expires, <= 0 expires at once."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else int(timeout * 1000)

    def _l2(self, l1_key, commands, publish=True):
        """Run `commands(pipe, l2_key)` in one round trip, publishing the change (a write); the
        first reply, or REDIS_FAILED when Redis failed or is skipped (counted: memory carries
        on alone, and a write's key is remembered for the breaker's probe)."""
        unsynced = l1_key if publish else None
        if not self._admitted(unsynced):
            return REDIS_FAILED
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                commands(pipe, self._tier.l2_key(l1_key))
                if publish:
                    self._listener.publish(pipe, self.location, f"key {l1_key}")
                return pipe.execute()[0]
        except redis.RedisError as error:
            self._failed(error, unsynced)
            return REDIS_FAILED

    def _store_l2(self, pipe, l2_key, value, ttl_ms, **options):
        if ttl_ms is not None and ttl_ms <= 0:
            pipe.delete(l2_key)
        else:
            pipe.set(l2_key, pickle.dumps(value, self.pickle_protocol), px=ttl_ms, **options)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        l1_key = self.make_and_validate_key(key, version)
        ttl_ms = self._ttl_ms(timeout)
        with self._tier.write(l1_key):
            super().set(key, value, timeout=timeout, version=version)
            self._l2(l1_key, lambda pipe, l2_key: self._store_l2(pipe, l2_key, value, ttl_ms))

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        """Added only when no process holds the key: Redis decides (SET NX)."""
        l1_key = self.make_and_validate_key(key, version)
        ttl_ms = self._ttl_ms(timeout)
        with self._tier.write(l1_key):
            if ttl_ms is not None and ttl_ms <= 0:
                exists = self._l2(l1_key, lambda pipe, l2_key: pipe.exists(l2_key), publish=False)
                if exists is not REDIS_FAILED and exists:
                    return False
                return super().add(key, value, timeout=timeout, version=version)
            added = self._l2(
                l1_key, lambda pipe, l2_key: self._store_l2(pipe, l2_key, value, ttl_ms, nx=True)
            )
            if added is REDIS_FAILED:  # memory decides
                return super().add(key, value, timeout=timeout, version=version)
            if added:
                super().set(key, value, timeout=timeout, version=version)
            return bool(added)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        l1_key = self.make_and_validate_key(key, version)
        ttl_ms = self._ttl_ms(timeout)

        def commands(pipe, l2_key):
            pipe.exists(l2_key)
            if ttl_ms is None:
                pipe.persist(l2_key)
            else:
                pipe.pexpire(l2_key, max(ttl_ms, 1))

        with self._tier.write(l1_key):
            touched_here = super().touch(key, timeout=timeout, version=version)
            exists = self._l2(l1_key, commands)
        return touched_here if exists is REDIS_FAILED else bool(exists)

    def incr(self, key, delta=1, version=None):
        """Atomic across processes (a WATCH transaction on the Redis entry, TTL kept)."""
        l1_key = self.make_and_validate_key(key, version)
        l2_key = self._tier.l2_key(l1_key)

        def increment(pipe):
            payload = pipe.get(l2_key)
            if payload is None:
                raise ValueError("Key '%s' not found" % l1_key)
            value = pickle.loads(payload) + delta
            pipe.multi()
            pipe.set(l2_key, pickle.dumps(value, self.pickle_protocol), keepttl=True)
            return value

        with self._tier.write(l1_key):
            if not self._admitted(l1_key):
                return super().incr(key, delta, version=version)
            try:
                value = self._redis.transaction(increment, l2_key, value_from_callable=True)
                self._tier.changed_elsewhere(l1_key)  # the next read refills with the TTL kept
                self._listener.publish(self._redis, self.location, f"key {l1_key}")
            except redis.RedisError as error:
                self._failed(error, l1_key)
                return super().incr(key, delta, version=version)
        return value

    def delete(self, key, version=None):
        l1_key = self.make_and_validate_key(key, version)
        with self._tier.write(l1_key):
            deleted_here = super().delete(key, version=version)
            deleted = self._l2(l1_key, lambda pipe, l2_key: pipe.delete(l2_key))
        return deleted_here or (deleted is not REDIS_FAILED and bool(deleted))

    def clear_counting(self):
        """A new generation for every process; returns the entries every live process held
        as they last published them (the dashboard's figure), or this process's alone when
        Redis fails."""
        tier = self._tier
        held = self.metrics_all_processes()["entries"]
        if not self._admitted(EVERYTHING):
            return super().clear_counting()
        try:
            tier.start_generation(lambda: self._redis.incr(tier.generation_key))
            # the number is for people reading the channel: listeners ask Redis for it
            self._listener.publish(self._redis, self.location, f"clear {tier.generation}")
        except redis.RedisError as error:
            self._failed(error, EVERYTHING)
            return super().clear_counting()
        super().clear_counting()  # stamps the time of the clear
        return held

    # --- metrics -----------------------------------------------------------------------

    def metrics(self):
        """This process's figures; a hit in Redis counts as a hit, its refill not as a set."""
        tier = self._tier
        with self._store.lock:  # read before the L1 figures: each L2 hit follows an L1 miss
            l2_hits, refills = tier.l2_hits, tier.refills
            l2_errors, l2_skipped = tier.l2_errors, tier.l2_skipped
        figures = super().metrics()
        hits, misses = figures["hits"] + l2_hits, figures["misses"] - l2_hits
        breaker = self._breaker.state
        return {
            **figures,
            "tier": "memory + Redis" if breaker == "closed" else "memory (Redis skipped)",
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
            "sets": figures["sets"] - refills,
            "l2_hits": l2_hits,
            "l2_errors": l2_errors,
            "l2_skipped": l2_skipped,
            "l2_breaker": breaker,
            "l2_trips": self._breaker.trips,
            "l2_open": int(breaker != "closed"),
        }

    def metrics_all_processes(self):
        """The figures summed over every live process (those that published recently)."""
        own = self.metrics()
        published = {}
        if self._breaker.admits(self._tier):  # the admin's reads are not counted as skipped
            try:
                published = self._redis.hgetall(self._tier.metrics_key)
            except redis.RedisError as error:
                self._failed(error)
        now = time.time()
        others, gone = [], []
        for field, value in published.items():
            if field.decode() == self._token:
                continue
            figures = json.loads(value)
            if now - figures["at"] <= METRICS_STALE_SECONDS:
                others.append(figures)
            else:
                gone.append(field)
        if gone:  # exited processes: the hash would grow with every recycled worker
            try:
                self._redis.hdel(self._tier.metrics_key, *gone)
            except redis.RedisError as error:
                self._failed(error)
        summed = {name: own[name] + sum(other.get(name, 0) for other in others) for name in SUMMED}
        gets = summed["hits"] + summed["misses"]
        clears = [f["last_clear"] for f in [own, *others] if f["last_clear"] is not None]
        skipping = f"; Redis skipped in {summed['l2_open']}" if summed["l2_open"] else ""
        return {
            **own,
            **summed,
            "tier": f"memory + Redis ({len(others) + 1} processes{skipping})",
            "hit_ratio": summed["hits"] / gets if gets else 0.0,
            "last_clear": max(clears, default=None),
        }
