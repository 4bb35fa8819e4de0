"""The named caches' metrics for Prometheus, correct with one process or many.

The backends count in plain integers (a get must stay cheap). This module copies those
counts into prometheus_client Counters and Gauges: `sync()` adds to each Counter what its
cache counted since the last sync in this process, and sets the Gauges. It runs after every
request this process serves and before every scrape it answers. Custom collectors do not
work in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before Python
starts); plain Counters and Gauges do: each process writes its own file and a scrape sums
them, counters of exited workers included, gauges of live ones only.
"""

import threading

from django.http import HttpResponse
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import Counter, Gauge

from caching import registry

COUNTED = ("hits", "misses", "evictions", "expirations", "l2_errors", "l2_skipped")
GAUGED = ("entries", "max_entries", "l2_open")
COUNTERS = {
    field: Counter(f"cache_{field}", f"Named cache {field}, summed over processes", ["cache"])
    for field in COUNTED
}
ENTRIES = Gauge(
    "cache_entries", "Entries held, summed over live processes", ["cache"],
    multiprocess_mode="livesum",
)
MAX_ENTRIES = Gauge(
    "cache_max_entries", "Capacity, summed over live processes", ["cache"],
    multiprocess_mode="livesum",
)
L2_OPEN = Gauge(
    "cache_l2_open", "Live processes whose Redis breaker skips the second tier", ["cache"],
    multiprocess_mode="livesum",
)
GAUGES = {"entries": ENTRIES, "max_entries": MAX_ENTRIES, "l2_open": L2_OPEN}

_exported = {}  # (cache, field) -> the value at the last sync in this process
_series = {}  # (cache, field) -> the labelled Counter or Gauge, created at the first sync
_lock = threading.Lock()


def series(name, field):
    if (name, field) not in _series:
        metric = COUNTERS.get(field) or GAUGES[field]
        _series[name, field] = metric.labels(name)
    return _series[name, field]


def sync(**signal_kwargs):
    """Bring this process' Prometheus values up to its caches' counts (a signal receiver).

    Only what changed since the last sync is written: it runs after every request. The
    second tier's figures (l2_*) exist for TieredCaches only.
    """
    with _lock:
        for described in registry.describe_all(all_processes=False):
            name = described["name"]
            for field in (*COUNTED, *GAUGED):
                if field not in described:
                    continue
                value, previous = described[field], _exported.get((name, field))
                if value == previous:
                    continue
                if field in COUNTED:
                    # A store's counts never restart within a process; one below the last
                    # is a read that raced a get in flight (TieredCache counts an L1 miss
                    # before its Redis hit turns it into a hit): wait for it to pass.
                    if previous is not None and value < previous:
                        continue
                    series(name, field).inc(value - (previous or 0))
                else:
                    series(name, field).set(value)
                _exported[name, field] = value


def metrics_view(request) -> HttpResponse:
    """django-prometheus' exposition (request, DB and cache metrics), caches synced first."""
    sync()
    return ExportToDjangoView(request)
