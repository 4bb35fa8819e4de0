"""Cross-process coherence of TieredCache's first tier, over Redis pub/sub.

One Listener per process and Redis URL: a daemon thread subscribed to every tiered
cache's event channel. A process that writes, deletes or clears publishes an event; the
others drop their local copies. Events a process missed while disconnected cannot be
replayed, so after every (re)subscription the local copies are dropped wholesale. The same
thread publishes this process's metrics every second, for the admin to sum.
"""

import logging
import threading
import time
import uuid

import redis

EVENTS_PATTERN = "caching:*:events"
METRICS_EVERY_SECONDS = 1.0
RECONNECT_SECONDS = 1.0
SUBSCRIBE_WAIT_SECONDS = 5.0

logger = logging.getLogger(__name__)


def events_channel(location):
    return f"caching:{location}:events"


class Listener:
    """Applies other processes' events to this process's tiers; publishes its metrics."""

    def __init__(self, url):
        self.client = redis.Redis.from_url(url)
        self.token = uuid.uuid4().hex  # tells this process's own events apart
        self.tiers = {}  # events channel -> Tier
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caching-coherence", daemon=True)

    def register(self, tier):
        """Route `tier`'s channel here and read its generation; the first call starts the
        thread and waits for it to subscribe, so no event published after this is missed."""
        channel = events_channel(tier.location)
        with self._lock:
            known = channel in self.tiers
            self.tiers[channel] = tier
            if not self._thread.is_alive():
                self._thread.start()
        self._subscribed.wait(SUBSCRIBE_WAIT_SECONDS)
        if not known:
            tier.resync(self.client)

    def publish(self, client, location, event):
        """Publish `event` through `client` (this listener's, or a pipeline of it)."""
        client.publish(events_channel(location), f"{self.token} {event}")

    def _run(self):
        while True:
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(EVENTS_PATTERN)
                pubsub.get_message(timeout=SUBSCRIBE_WAIT_SECONDS)  # the subscription's reply
                self._resync()
                self._subscribed.set()
                self._listen(pubsub)
            except redis.RedisError as error:
                logger.warning("caching: lost Redis (%s); retrying in %ss", error, RECONNECT_SECONDS)
                time.sleep(RECONNECT_SECONDS)

    def _listen(self, pubsub):
        published_at = 0.0
        while True:
            message = pubsub.get_message(timeout=METRICS_EVERY_SECONDS)
            if message is not None:
                self._apply(message["channel"].decode(), message["data"].decode())
            if time.monotonic() - published_at >= METRICS_EVERY_SECONDS:
                for tier in self._registered():
                    tier.publish_metrics(self.client, self.token)
                published_at = time.monotonic()

    def _registered(self):
        with self._lock:
            return list(self.tiers.values())

    def _apply(self, channel, data):
        token, kind, argument = data.split(" ", 2)
        with self._lock:
            tier = self.tiers.get(channel)
        if tier is None or token == self.token:
            return
        if kind == "clear":
            tier.cleared_elsewhere(int(argument))
        else:
            tier.changed_elsewhere(argument)

    def _resync(self):
        for tier in self._registered():
            tier.resync(self.client)


_listeners = {}
_listeners_lock = threading.Lock()


def listener_for(url):
    with _listeners_lock:
        if url not in _listeners:
            _listeners[url] = Listener(url)
        return _listeners[url]
