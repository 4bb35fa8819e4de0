"""The second tier's breaker: a Redis that failed is skipped for a cool-down, not waited on.

One per Redis URL and process, shared by every TieredCache on that Redis (a stall is the
server's, not one cache's). Closed, calls go to Redis. A failed call opens it: for
COOL_DOWN_SECONDS every call skips Redis at once and the caches answer from memory. Then
the coherence listener probes, with one call of its own while every other call keeps
skipping, and closes it when Redis answers. Only the state is locked, never a Redis call.

Coherence: a write that skipped or failed in Redis leaves Redis holding an older value (or,
for a clear, the older generation) than this process's memory; a timed-out write may even
land later. So every such key is remembered (a skipped clear, or more than
MAX_UNSYNCED_KEYS keys, as the whole cache), and the probe makes Redis forget them (DEL,
or a new generation) and tells the other processes, before any call reads Redis again.
"""

import logging
import threading
import time

logger = logging.getLogger(__name__)

COOL_DOWN_SECONDS = 2.0
MAX_UNSYNCED_KEYS = 1000
EVERYTHING = object()  # what is remembered for a tier whose whole content is unsynced


class Breaker:
    """closed -> open (a failure) -> probing (the listener's one call) -> closed or open."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = None  # None: closed
        self._probing = False
        self._failures = 0
        self._unsynced = {}  # Tier -> set of its L1 keys, or EVERYTHING
        self.trips = 0

    @property
    def state(self):
        with self._lock:
            if self._open_until is None:
                return "closed"
            return "probing" if self._probing else "open"

    def admits(self, tier, unsynced=None):
        """True when a call may go to Redis now: when closed, and for a write (`unsynced`: an
        L1 key of `tier` or what else it changes there, or EVERYTHING) while the probe runs.
        Otherwise the call skips Redis, and what a write skipped is remembered."""
        with self._lock:
            if self._open_until is None or (self._probing and unsynced is not None):
                return True
            if unsynced is not None:
                self._remember(tier, unsynced)
        return False

    def failed(self, tier, error, unsynced=None):
        """A call to Redis failed: open (again) for a cool-down, remembering `unsynced`."""
        with self._lock:
            self._failures += 1
            if unsynced is not None:
                self._remember(tier, unsynced)
            tripped = self._open_until is None
            if tripped:
                self.trips += 1
            self._open_until = self._clock() + COOL_DOWN_SECONDS
        if tripped:
            logger.warning(
                "caching: Redis failed (%s): memory only for %ss, then a probe",
                error, COOL_DOWN_SECONDS,
            )

    def _remember(self, tier, unsynced):
        keys = self._unsynced.setdefault(tier, set())
        if keys is EVERYTHING:
            return
        if unsynced is EVERYTHING or len(keys) >= MAX_UNSYNCED_KEYS:
            self._unsynced[tier] = EVERYTHING
        else:
            keys.add(unsynced)

    def due(self):
        """True when the cool-down is over and nobody probes yet."""
        with self._lock:
            return (
                self._open_until is not None
                and not self._probing
                and self._clock() >= self._open_until
            )

    def probe(self, resync):
        """The one call after the cool-down (the listener makes it): `resync(unsynced)` must
        make Redis forget what `unsynced` ({tier: keys or EVERYTHING}, maybe empty) names, or
        raise. Meanwhile reads still skip Redis and writes go to it (after the resync, or
        before it and undone by it: either way Redis holds no older value than memory); a
        call that fails meanwhile keeps the breaker open."""
        with self._lock:
            if self._open_until is None or self._probing:
                return
            self._probing = True
            failures = self._failures
            pending, self._unsynced = self._unsynced, {}
        try:
            resync(pending)
        except Exception as error:  # noqa: BLE001 - Redis failed (or a bug): stay open
            self._reopen(pending, error)
            return
        with self._lock:
            self._probing = False
            if self._failures != failures:
                return  # a write failed meanwhile: open for its cool-down
            self._open_until = None
        logger.warning("caching: Redis answers again: memory + Redis")

    def _reopen(self, pending, error):
        with self._lock:
            self._probing = False
            for tier, keys in pending.items():
                for key in [EVERYTHING] if keys is EVERYTHING else keys:
                    self._remember(tier, key)
            self._open_until = self._clock() + COOL_DOWN_SECONDS
        logger.warning("caching: Redis still fails (%s): memory only", error)
