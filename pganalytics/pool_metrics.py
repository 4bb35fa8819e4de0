"""The database pool's figures summed over the server's processes, for Prometheus and the
dashboard's "Database pool" panel.

Each process copies its pool's figures (pganalytics.db.pool_stats) into Gauges after every
request, as caching.prometheus does for the caches. In prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, several gunicorn workers) each process writes its own file, a
scrape sums the live ones (gunicorn.conf.py drops an exited worker's), and the panel reads the
same sums back from that directory; otherwise both show this process's own pool.
"""

import os
from pathlib import Path

from prometheus_client import Gauge
from prometheus_client.multiprocess import MultiProcessCollector

from pganalytics.db import pool_stats

SUMMED = {
    "processes": "Live processes with a database pool",
    "size": "Connections the pools hold open",
    "available": "Connections idle in the pools",
    "waiting": "Requests waiting for a connection",
    "requests": "Connections handed out by the live processes' pools",
    "errors": "Connection requests the live processes' pools failed",
}
# Labelled by alias, so that a process writes these (in multiprocess mode, its file of live
# gauges) only once it has a pool: an unlabelled gauge would be written at import.
GAUGES = {
    name: Gauge(f"db_pool_{name}", help_text, ["alias"], multiprocess_mode="livesum")
    for name, help_text in SUMMED.items()
}


def sync(**signal_kwargs):
    """Write this process's pool figures (a request_finished receiver); nothing without a
    pool, or before this process has used it."""
    stats = pool_stats()
    if not stats["pooled"]:
        return
    for name, gauge in GAUGES.items():
        gauge.labels(stats["alias"]).set(1 if name == "processes" else stats[name])


def summed(directory=None):
    """The dashboard panel: the pool's configuration per process and its figures summed over
    the live processes (this process's alone without PROMETHEUS_MULTIPROC_DIR)."""
    own = pool_stats()
    if not own["pooled"]:
        return own
    sync()
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    figures = {name: (1 if name == "processes" else own[name]) for name in SUMMED}
    if directory:
        figures = dict.fromkeys(SUMMED, 0)
        files = [str(path) for path in Path(directory).glob("gauge_livesum_*.db")]
        for metric in MultiProcessCollector.merge(files, accumulate=False):
            name = metric.name.removeprefix("db_pool_")
            if metric.name.startswith("db_pool_") and name in figures:
                figures[name] = int(sum(sample.value for sample in metric.samples))
    return {
        "pooled": True,
        "min_size_per_process": own["min_size"],
        "max_size_per_process": own["max_size"],
        **figures,
    }
