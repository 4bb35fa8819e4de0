"""Cross-process coherence of TieredCache's first tier, over Redis pub/sub.

One Listener per process and Redis URL: a daemon thread subscribed to every tiered
cache's event channel. A process that writes, deletes or clears publishes an event; the
others drop their local copies. Events a process missed while disconnected cannot be
replayed, so after every (re)subscription the local copies are dropped wholesale. The same
thread publishes this process's metrics every second, for the admin to sum, and makes the
probe of the tier's breaker (caching.breaker) once its cool-down is over. Redis calls time out
quickly: a Redis that does not answer costs a call half a second, then the breaker skips it.
"""

import logging
import threading
import time
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from caching.breaker import Breaker

EVENTS_PATTERN = "caching:*:events"
METRICS_EVERY_SECONDS = 1.0
RECONNECT_SECONDS = 1.0
SUBSCRIBE_WAIT_SECONDS = 1.0
REDIS_TIMEOUT_SECONDS = 0.5  # no retries: the pool already replaces a connection found closed

logger = logging.getLogger(__name__)


def events_channel(location):
    return f"caching:{location}:events"


class Listener:
    """Applies other processes' events to this process's tiers; publishes its metrics;
    probes a Redis its breaker skips."""

    def __init__(self, url):
        self.client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0),
        )
        self.token = uuid.uuid4().hex  # tells this process's own events apart
        self.tiers = {}  # events channel -> Tier
        self.breaker = Breaker()
        self._lock = threading.Lock()
        self._tried = threading.Event()  # the thread has subscribed, or failed to, once
        self._thread = threading.Thread(target=self._run, name="caching-coherence", daemon=True)

    def register(self, tier):
        """Route `tier`'s channel here and read its generation; the first call starts the
        thread and waits for it to subscribe, so no event published after this is missed.
        A Redis that is down delays nothing: the thread resyncs once it gets through."""
        channel = events_channel(tier.location)
        with self._lock:
            known = channel in self.tiers
            self.tiers[channel] = tier
            if not self._thread.is_alive():
                self._thread.start()
        self._tried.wait(SUBSCRIBE_WAIT_SECONDS)
        if not known:
            try:
                tier.resync(self.client)
            except redis.RedisError as error:
                tier.count_error(error)

    def publish(self, client, location, event):
        """Publish `event` through `client` (this listener's, or a pipeline of it)."""
        client.publish(events_channel(location), f"{self.token} {event}")

    def _run(self):
        while True:
            try:
                with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    self._subscribe(pubsub)
                    self._listen(pubsub)
            except redis.RedisError as error:
                logger.warning("caching: lost Redis (%s); retrying", error)
            except Exception:  # a bug must not end coherence for the life of the process
                logger.exception("caching: the listener failed; restarting it")
            time.sleep(RECONNECT_SECONDS)

    def _subscribe(self, pubsub):
        try:
            pubsub.psubscribe(EVENTS_PATTERN)
            pubsub.get_message(timeout=SUBSCRIBE_WAIT_SECONDS)  # the subscription's reply
            self._resync()
        finally:
            self._tried.set()

    def _listen(self, pubsub):
        published_at = 0.0
        while True:
            message = pubsub.get_message(timeout=METRICS_EVERY_SECONDS)
            if message is not None:
                try:
                    self._apply(message["channel"].decode(), message["data"].decode())
                except redis.RedisError:
                    raise  # lost Redis: _run reconnects and resyncs
                except Exception:  # anyone can publish on the channel
                    logger.exception("caching: ignored a malformed event %r", message)
            if self.breaker.due():
                self.breaker.probe(self._forget)
            if time.monotonic() - published_at >= METRICS_EVERY_SECONDS:
                for tier in self._registered():
                    try:
                        tier.publish_metrics(self.client, self.token)
                    except redis.ResponseError as error:  # OOM, READONLY, NOPERM: still connected
                        tier.count_error(error)
                published_at = time.monotonic()

    def _forget(self, unsynced):
        """The breaker's probe: a PING, then Redis made to forget what this process's writes
        left unsynced there ({tier: what}: see Tier.forget). Raises when Redis fails."""
        self.client.ping()
        for tier, what in unsynced.items():
            tier.forget(self.client, what, self.publish)

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
            tier.resync(self.client)  # Redis's generation, not the event's: the last clear wins
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
