"""Per-key mutual exclusion, so concurrent misses of one key compute the value once."""

import threading
from contextlib import contextmanager


class KeyedLocks:
    """A lock per key, created on first use and dropped when its last holder leaves.

    Re-entrant: a computation that asks for its own key again (directly or through a
    nested get_or_set) proceeds instead of waiting for itself."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks = {}  # key -> [lock, number of threads holding or waiting]

    @contextmanager
    def hold(self, key):
        with self._guard:
            slot = self._locks.setdefault(key, [threading.RLock(), 0])
            slot[1] += 1
        try:
            with slot[0]:
                yield
        finally:
            with self._guard:
                slot[1] -= 1
                if slot[1] == 0:
                    del self._locks[key]

    def __len__(self):
        with self._guard:
            return len(self._locks)
