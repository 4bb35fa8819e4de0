"""Version tokens: names of the current state of something, held in a named cache.

What is cached about a state carries its token (in its key, or as its cache version). A
change replaces the token once its transaction commits, so what was cached under the old
one is never read again, by any process sharing the cache, without knowing its keys. A
token the cache lost (cleared, evicted, a Redis restarted empty) is replaced by a new one,
never recomputed: nothing cached before the loss can pass for current. Reading a token is a
read of the cache alone; with the Redis tier, of this process's memory on a hit.

Only a cache every process shares can hold them: a token moved in one process's memory alone
would leave the others reading what it was meant to retire. Callers check `shared` and
otherwise read the state itself; moves are then skipped.
"""

import uuid

from django.core.cache import caches
from django.db import transaction

from caching.registry import shared


def new_token():
    return uuid.uuid4().hex


class VersionTokens:
    """The tokens kept in the cache `alias`, by name."""

    def __init__(self, alias):
        self.alias = alias

    @property
    def shared(self):
        """Whether the tokens are one for every process (the cache has the Redis tier)."""
        return shared(self.alias)

    def current(self, name):
        """The token of `name`; a new one when the cache holds none (concurrent askers agree:
        the first stored wins)."""
        return caches[self.alias].get_or_set(f"token:{name}", new_token, timeout=None)

    def move(self, *names):
        """New tokens for `names` once the current transaction commits (at once outside one);
        nothing where the cache is not shared (nobody reads the tokens there)."""
        if not self.shared:
            return
        cache = caches[self.alias]
        transaction.on_commit(
            lambda: cache.set_many({f"token:{name}": new_token() for name in names}, timeout=None),
            robust=True,
        )
