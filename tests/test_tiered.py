"""TieredCache against a real Redis: the second tier, and coherence between real processes."""

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from caching.coherence import REDIS_TIMEOUT_SECONDS
from caching.tiered import TieredCache
from pganalytics.local_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
L2_URL = "redis://127.0.0.1:6379/14"  # scripts/ensure-redis brings it up
CHILD = """
import json, os, sys, time
import django
django.setup()
from caching.coherence import REDIS_TIMEOUT_SECONDS
from caching.tiered import TieredCache
cache = TieredCache(sys.argv[1], {"TIMEOUT": 300, "OPTIONS": {"L2_URL": sys.argv[2]}})
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    op, *args = json.loads(line)
    if op == "get_or_set":
        result = cache.get_or_set(args[0], lambda: (time.sleep(0.5), os.getpid())[1])
    elif op == "incr":
        result = [cache.incr(args[0]) for _ in range(args[1])][-1]
    elif op == "metrics":
        result = cache.metrics()
    else:
        result = getattr(cache, op)(*args)
    print(json.dumps(result), flush=True)
"""


def make(location, url=L2_URL, **options):
    return TieredCache(location, {"TIMEOUT": 300, "OPTIONS": {"L2_URL": url, **options}})


@pytest.fixture
def location():
    """A cache LOCATION of this test alone: its Redis keys cannot meet another test's."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def l2():
    return redis.Redis.from_url(L2_URL)


class Child:
    """Another process with a TieredCache of the same LOCATION, driven over stdin/stdout."""

    def __init__(self, location, url=L2_URL):
        environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "pganalytics.settings"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, location, url], cwd=ROOT, env=environment,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.read() == "ready"

    def read(self):
        line = self.process.stdout.readline()
        assert line, "the child process died"
        return json.loads(line)

    def __call__(self, op, *args):
        self.process.stdin.write(json.dumps([op, *args]) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture
def child_of():
    children = []

    def start(location, url=L2_URL):
        children.append(Child(location, url))
        return children[-1]

    yield start
    for child in children:
        child.close()


def eventually(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within %ss" % seconds
        time.sleep(0.02)


def prompt(call, seconds=3.0):
    """What call() returns, which must be within `seconds` (a hang fails, not blocks)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


# --- one process --------------------------------------------------------------------------


def test_a_miss_in_memory_is_answered_by_redis_with_the_remaining_ttl(location, l2):
    cache = make(location)
    cache.set("k", {"v": 0}, timeout=100)
    cache.set("falsy", 0)
    cache._store.remove_all()  # as if this process had never seen them
    assert cache.get("k") == {"v": 0} and cache.get("falsy") == 0
    entry = cache._store.entries[cache.make_key("k")]
    assert 95 < entry[1] - time.monotonic() <= 100  # the TTL Redis had left, not a new one
    metrics = cache.metrics()
    assert (metrics["l2_hits"], metrics["hits"], metrics["misses"]) == (2, 2, 0)
    assert metrics["sets"] == 2  # refills are not sets
    assert l2.pttl(cache._tier.l2_key(cache.make_key("k"))) > 95_000


def test_timeouts_none_and_zero_reach_redis(location, l2):
    cache = make(location)
    cache.set("forever", 1, timeout=None)
    cache.set("gone", 1, timeout=0)
    assert l2.pttl(cache._tier.l2_key(cache.make_key("forever"))) == -1
    assert not l2.exists(cache._tier.l2_key(cache.make_key("gone")))
    assert cache.get("gone") is None


def test_add_asks_redis_so_a_key_held_elsewhere_is_not_overwritten(location):
    cache = make(location)
    cache.set("k", "first")
    cache._store.remove_all()
    assert cache.add("k", "second") is False and cache.get("k") == "first"
    assert cache.add("new", 1) is True and cache.get("new") == 1


def test_touch_incr_delete_has_key(location, l2):
    cache = make(location)
    cache.set("n", 1, timeout=5)
    assert cache.touch("n", None) is True
    assert l2.pttl(cache._tier.l2_key(cache.make_key("n"))) == -1
    assert cache.incr("n", 4) == 5 and cache.get("n") == 5
    with pytest.raises(ValueError):
        cache.incr("absent")
    cache._store.remove_all()
    assert cache.has_key("n") and cache.delete("n") and not cache.has_key("n")
    assert cache.touch("n") is False


def test_clear_starts_a_new_generation(location, l2):
    cache = make(location)
    cache.set("k", 1)
    old_key = cache._tier.l2_key(cache.make_key("k"))
    assert cache.clear_counting() == 1
    assert cache.get("k") is None and l2.exists(old_key)  # unreachable, left to expire
    assert int(l2.get(f"caching:{location}:generation")) == 1


def pause_in(cache, method, thread_name):
    """Make `thread_name` stop in `cache.method` until the returned event is set; returns
    (reached, go)."""
    reached, go = threading.Event(), threading.Event()
    original = getattr(cache, method)

    def paused(*args, **kwargs):
        if threading.current_thread().name == thread_name:
            reached.set()
            assert go.wait(30)
        return original(*args, **kwargs)

    setattr(cache, method, paused)
    return reached, go


@pytest.mark.parametrize("write", ["set", "delete"])
def test_a_refill_in_flight_does_not_undo_this_process_own_write(location, write):
    cache = make(location)
    cache.set("k", "old")
    cache._store.remove_all()  # this process holds no copy: the next get reads Redis
    read, go = pause_in(cache, "_entry", "reader")  # between its Redis read and its refill
    reader = threading.Thread(target=cache.get, args=("k",), name="reader")
    reader.start()
    assert read.wait(10)
    getattr(cache, write)("k", *(["new"] if write == "set" else []))
    go.set()
    reader.join()
    expected = None if write == "delete" else "new"
    assert cache.get("k") == expected


def test_concurrent_sets_of_one_key_leave_memory_and_redis_alike(location, l2):
    cache = make(location)
    stored, go = pause_in(cache, "_store_l2", "first")  # between its memory and Redis writes
    first = threading.Thread(target=cache.set, args=("k", "first"), name="first")
    second = threading.Thread(target=cache.set, args=("k", "second"))
    first.start()
    assert stored.wait(10)
    second.start()
    second.join(timeout=1)  # done on the old code; waiting for `first` now
    go.set()
    first.join()
    second.join()
    in_redis = pickle.loads(l2.get(cache._tier.l2_key(cache.make_key("k"))))
    assert cache.get("k") == in_redis


# --- several processes ---------------------------------------------------------------------


def test_writes_deletes_and_clears_reach_the_other_process(location, child_of):
    cache, child = make(location), child_of(location)
    cache.set("k", 1)
    assert child("get", "k") == 1  # now in the child's memory too
    cache.set("k", 2)
    eventually(lambda: child("get", "k") == 2)
    cache.delete("k")
    eventually(lambda: child("get", "k") is None)

    child("set", "j", "from the child")
    assert cache.get("j") == "from the child"

    def j_here_and_there():
        # read again: a listener that resynced after a slow Redis call dropped its memory
        held = cache.get("j") == child("get", "j") == "from the child"
        return held and cache.metrics_all_processes()["entries"] == 2

    eventually(j_here_and_there)
    assert cache.clear_counting() == 2  # what the dashboard shows, not this process's 1
    eventually(lambda: child("get", "j") is None)
    child("set", "after", 1)
    assert cache.get("after") == 1  # both write and read the new generation


def test_incr_is_atomic_across_processes(location, child_of):
    cache, child = make(location), child_of(location)
    cache.set("n", 0)
    increments = threading.Thread(target=child, args=("incr", "n", 200))
    increments.start()
    for _ in range(200):
        cache.incr("n")
    increments.join()
    assert cache.get("n") == 400


def test_get_or_set_computes_once_across_processes(location, child_of):
    children = [child_of(location), child_of(location)]
    results = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(c("get_or_set", "slow")))
        for c in children
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1  # one process computed it (its pid), the other waited
    assert make(location).get("slow") == results[0]


def test_get_or_set_keeps_a_value_another_process_stored_meanwhile(location, child_of):
    cache, child = make(location), child_of(location)

    def default():
        child("set", "k", "theirs")
        return "ours"

    assert cache.get_or_set("k", default) == "theirs" and cache.get("k") == "theirs"


def test_get_or_set_waits_neither_for_itself_nor_for_a_user_key(location):
    cache = make(location)

    def nested():
        return "outer " + cache.get_or_set("k", "inner")

    assert prompt(lambda: cache.get_or_set("k", nested)) == "inner"  # stored first, kept
    cache.set("page:lock", "a user's value")
    assert prompt(lambda: cache.get_or_set("page", "computed")) == "computed"


def test_the_admin_figures_sum_every_live_process(location, child_of):
    cache, child = make(location), child_of(location)
    child("set", "a", 1)
    child("get", "a")
    child("get", "b")
    cache.get("c")

    # each process publishes its figures every second
    eventually(lambda: cache.metrics_all_processes()["gets"] == cache.metrics()["gets"] + 2)
    total, own = cache.metrics_all_processes(), cache.metrics()
    assert total["tier"] == "memory + Redis (2 processes)"
    assert total["entries"] == own["entries"] + 1 and total["hits"] == own["hits"] + 1
    assert total["misses"] == own["misses"] + 1


def test_figures_of_exited_processes_are_dropped_from_redis(location, l2):
    cache = make(location)
    metrics_key = f"caching:{location}:metrics"
    exited = {**cache.metrics(), "at": time.time() - 60, "gets": 1000}
    l2.hset(metrics_key, "exited-process", json.dumps(exited))

    total = cache.metrics_all_processes()

    assert total["tier"] == "memory + Redis (1 processes)" and total["gets"] < 1000
    assert not l2.hexists(metrics_key, "exited-process")


# --- a Redis that goes away ----------------------------------------------------------------


class RedisServer:
    """A redis-server of this test's own, so it can be stopped and started again."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        eventually(lambda: _answers(client), seconds=10)

    def stop(self):
        self.process.send_signal(signal.SIGCONT)  # stopped, it would act on SIGTERM only then
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def redis_server():
    """A redis-server of this test alone: even its pub/sub events reach no one else."""
    server = RedisServer()
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def _answers(client):
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def test_without_redis_memory_carries_on_and_stale_copies_go_when_it_returns(
    location, redis_server
):
    cache = make(location, url=redis_server.url)
    cache.set("k", "before")
    redis_server.stop()

    assert cache.get("k") == "before"  # from memory
    cache.set("k", "during")  # memory only: Redis is gone
    assert cache.get("k") == "during" and cache.metrics()["l2_errors"] >= 1

    redis_server.start()  # empty: what was written during the outage is lost there
    eventually(lambda: cache.get("k") is None, seconds=10)  # resubscribed: memory dropped
    cache.set("k", "after")
    assert cache.get("k") == "after"


def test_after_redis_restarts_empty_its_generation_holds_for_every_process(
    location, redis_server, child_of
):
    cache = make(location, url=redis_server.url)
    for _ in range(3):
        cache.clear()
    redis_server.stop()
    redis_server.start()  # empty: the generation counts from 0 again
    eventually(lambda: cache._tier.generation == 0, seconds=15)  # resubscribed
    cache.set("k", 1)
    cache.clear()
    assert cache.get("k") is None
    child = child_of(location, redis_server.url)  # a process started after the restart
    child("set", "shared", "from the child")
    assert cache.get("shared") == "from the child"


def test_a_malformed_event_does_not_end_coherence(location, redis_server, child_of):
    cache, child = make(location, url=redis_server.url), child_of(location, redis_server.url)
    cache.set("k", "old")
    events = redis.Redis.from_url(redis_server.url)
    for data in (b"malformed", b"two words", b"\xff"):
        events.publish(f"caching:{location}:events", data)
    child("set", "k", "new")
    eventually(lambda: cache.get("k") == "new")


def test_a_redis_refusing_writes_is_counted_not_taken_for_a_lost_connection(
    location, redis_server
):
    cache = make(location, url=redis_server.url)
    cache.set("k", "v")
    redis.Redis.from_url(redis_server.url).config_set("maxmemory", 1)  # OOM for every write
    invalidations = cache._tier.invalidations
    # the listener publishes this process's figures every second: those writes fail
    eventually(lambda: cache.metrics()["l2_errors"] >= 2, seconds=10)
    assert cache._tier.invalidations == invalidations and cache.get("k") == "v"  # no resync


def test_with_redis_down_from_the_start_caches_are_built_and_used_promptly(location):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    cache = prompt(lambda: make(location, url=url))
    prompt(lambda: cache.set("k", 1))
    assert prompt(lambda: cache.get("k")) == 1 and prompt(lambda: cache.get("absent")) is None
    assert prompt(lambda: cache.get_or_set("g", 2)) == 2
    assert prompt(lambda: make(location, url=url)).get("g") == 2


def test_a_redis_that_stops_answering_costs_a_call_little(location, redis_server):
    cache = make(location, url=redis_server.url)
    cache.set("k", "v")
    redis_server.process.send_signal(signal.SIGSTOP)
    assert prompt(lambda: cache.get("k")) == "v"  # from memory
    assert prompt(lambda: cache.get("absent")) is None
    prompt(lambda: cache.set("k", "w"))
    assert prompt(lambda: cache.get("k")) == "w"


def test_a_redis_paused_under_load_costs_a_call_one_timeout_at_most(location, redis_server):
    cache = make(location, url=redis_server.url)
    stop, calls, failures = threading.Event(), [], []

    def load(seed):
        """get_or_set, set and delete of 200 keys, each call timed: (start, seconds)."""
        rng = random.Random(seed)
        while not stop.is_set():
            key = f"k{rng.randrange(200)}"
            started = time.monotonic()
            try:
                draw = rng.random()
                if draw < 0.7:
                    assert cache.get_or_set(key, key.upper) == key.upper()
                elif draw < 0.9:
                    cache.set(key, key.upper())
                else:
                    cache.delete(key)
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(error)
            calls.append((started, time.monotonic() - started))

    threads = [threading.Thread(target=load, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    redis_server.process.send_signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    time.sleep(3)
    assert cache.metrics()["l2_breaker"] == "open" and cache.metrics()["l2_skipped"] > 0
    redis_server.process.send_signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    eventually(lambda: cache.metrics()["l2_breaker"] == "closed", seconds=15)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()

    assert failures == []
    answered_while_paused = [s for started, s in calls if paused_at <= started < resumed_at]
    assert len(answered_while_paused) > 100  # from memory, not frozen
    assert max(seconds for _, seconds in calls) < 3 * REDIS_TIMEOUT_SECONDS
    # A thread waits out one timeout when the pause catches it in a call; then calls skip Redis
    # (without the breaker each call would wait, and get_or_set several times).
    waited = [s for _, s in calls if s >= 0.8 * REDIS_TIMEOUT_SECONDS]
    assert 1 <= len(waited) <= 2 * len(threads)
    assert cache.metrics()["l2_trips"] == 1

    cache.set("after", 1)  # Redis is used again
    cache._store.remove_all()
    hits = cache.metrics()["l2_hits"]
    assert cache.get("after") == 1 and cache.metrics()["l2_hits"] == hits + 1


def test_what_a_paused_redis_skipped_is_forgotten_there_before_it_is_read_again(
    location, redis_server, child_of
):
    cache = make(location, url=redis_server.url)
    other = make(f"{location}-other", url=redis_server.url)  # another cache on that Redis
    child = child_of(location, redis_server.url)
    cache.set("k", "old")
    cache.set("gone", "old")
    other.set("c", "old")
    assert child("get", "k") == "old"  # the other process holds a copy
    redis_server.process.send_signal(signal.SIGSTOP)
    cache.set("k", "mid")  # times out; Redis may still apply it when it resumes
    cache.set("k", "new")  # skipped: memory only
    cache.delete("gone")  # skipped
    other.clear()  # skipped
    assert other.metrics()["l2_breaker"] == "open" and cache.metrics()["l2_skipped"] == 2
    redis_server.process.send_signal(signal.SIGCONT)
    eventually(lambda: cache.metrics()["l2_breaker"] == "closed", seconds=15)

    # "new" from memory, or nothing when the listener's own connection timed out in the pause
    # and it resynced by dropping memory: never "mid" or "old"
    assert cache.get("k") in ("new", None)
    for tiered in (cache, other):
        tiered._store.remove_all()  # as if evicted: the next reads ask Redis
    # never a value older than this process's own last write ("mid", "old")
    assert cache.get("k") is None and cache.get("gone") is None and other.get("c") is None
    eventually(lambda: child("get", "k") is None and child("get", "gone") is None)


def test_a_tiered_cache_needs_its_url():
    with pytest.raises(ImproperlyConfigured, match="L2_URL"):
        TieredCache("no-url", {"TIMEOUT": 300})
