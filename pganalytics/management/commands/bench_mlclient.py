"""`manage.py bench_mlclient [--calls 500] [--rounds 20] [--json]`: what mlclient's pooling,
prediction cache, batching and breaker are worth, measured side by side in one run against
the repo's ML service under gunicorn.

The service at ML_SERVICE_URL is used when it answers; otherwise, for a loopback URL, this
command starts `manage.py mlservice --workers 2` there and stops it at the end. One client
thread, predictions of one realistic feature vector. The cases compared are run interleaved
(a slice of one, a slice of the other, `SLICES` times), so that a change in the machine's
load during the run weighs on both sides alike:

  new connection   requests.post per call: a new TCP connection each time
  pooled           MLClient.predict: keep-alive connections from the session's pool
  uncached         mlclient.predictions.current of a fingerprint not cached (a service call)
  cached           mlclient.predictions.current of a fingerprint in the `predictions` cache
  batch / singles  one predict_batch of --batch items vs --batch MLClient.predict calls
                   (median of --rounds rounds each)
  breaker open     MLClient.predict while the breaker is open (median of --breaker-calls)
"""

import json
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from mlclient import CircuitOpen, MLClient, ServiceUnavailable
from mlclient.predictions import CachedPredictions
from pganalytics.analytics.features import extract_features
from pganalytics.local_servers import free_port, stop

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT = 60  # seconds for a started service to answer /health
SLICES = 10  # interleaved slices of each pair of compared cases
GOALS = {  # figure: (minimum or maximum, bound)
    "pooled_vs_new_connection": (">=", 1.5),
    "cached_vs_uncached": (">=", 50.0),
    "batch_vs_single": (">=", 5.0),
    "breaker_open_call_us": ("<", 1000.0),
}
SQL = (
    "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id"
    " WHERE o.created_at > $1 ORDER BY o.created_at DESC LIMIT $2"
)
STATS = {"calls": 120.0, "interval_seconds": 60.0, "mean_ms": 4.2, "stddev_ms": 1.3,
         "rows": 2400.0, "shared_blks_hit": 9000.0, "shared_blks_read": 300.0}


class Command(BaseCommand):
    help = "Measure mlclient against the ML service: pooled vs new connections, cache, batch."

    def add_arguments(self, parser):
        parser.add_argument("--calls", type=int, default=500, help="timed calls per case")
        parser.add_argument("--batch", type=int, default=50, help="items of the batch case")
        parser.add_argument("--rounds", type=int, default=20, help="rounds of the batch case")
        parser.add_argument("--breaker-calls", type=int, default=10000,
                            help="timed calls while the breaker is open")
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args, calls, batch, rounds, breaker_calls, **options):
        if min(calls, batch, rounds, breaker_calls) < 1:
            raise CommandError("--calls, --batch, --rounds and --breaker-calls must be >= 1")
        url = settings.ML_SERVICE_URL
        with running_service(url) as started:
            bench = Bench(url, calls, batch, rounds, breaker_calls, quiet=options["json"])
            figures = {**bench.run(), "service_started": started, "service": url}
        self.stdout.write(json.dumps(figures) if options["json"] else table(figures))


class Bench:
    def __init__(self, url, calls, batch, rounds, breaker_calls, quiet):
        self.url = url
        self.calls, self.batch, self.rounds = calls, batch, rounds
        self.breaker_calls = breaker_calls
        self.features = extract_features(SQL, STATS)
        total = 4 * calls + rounds * (batch + 1) + breaker_calls
        self.progress = tqdm(total=total, disable=quiet, desc="bench_mlclient", leave=False)

    def run(self):
        with self.progress:
            client = MLClient(self.url)
            cached = CachedPredictions(client)
            client.predict("warm-up", self.features)
            new_connection, pooled = self.interleaved(
                self.new_connection_call, lambda i: client.predict(f"pooled-{i}", self.features)
            )
            run_id = uuid.uuid4().hex[:8]
            cached.current("hot", self.features)
            uncached, warm = self.interleaved(
                lambda i: cached.current(f"miss-{run_id}-{i}", self.features),
                lambda i: cached.current("hot", self.features),
            )
            batch, singles = self.batch_case(client)
            breaker_us = self.breaker_open_call_us()
            client.close()
        return {
            "pooled_vs_new_connection": pooled["requests_per_s"] / new_connection["requests_per_s"],
            "cached_vs_uncached": warm["requests_per_s"] / uncached["requests_per_s"],
            "batch_vs_single": singles["p50_ms"] / batch["p50_ms"],
            "breaker_open_call_us": breaker_us,
            "new_connection": new_connection,
            "pooled": pooled,
            "uncached": uncached,
            "cached": warm,
            "batch": batch,
            "singles": singles,
            "batch_items": self.batch,
            "prediction_cache": caches["predictions"].__class__.__name__,
        }

    def new_connection_call(self, index):
        body = {"fingerprint": f"new-{index}", "features": self.features, "scenario": "current"}
        response = requests.post(f"{self.url}/api/v1/predict", json=body, timeout=(1.0, 5.0),
                                 headers={"X-Request-ID": uuid.uuid4().hex})
        response.raise_for_status()
        return response.json()

    def interleaved(self, first, second):
        """summary() of --calls calls of first(i) and of second(i), run in alternating
        slices."""
        durations, size = ([], []), -(-self.calls // SLICES)  # slices of the ceiling
        for start in range(0, self.calls, size):
            for call, taken in zip((first, second), durations):
                for index in range(start, min(self.calls, start + size)):
                    before = time.perf_counter()
                    call(index)
                    taken.append(time.perf_counter() - before)
                    self.progress.update()
        return [summary(taken) for taken in durations]

    def batch_case(self, client):
        items = [(f"batch-{i}", self.features, "current") for i in range(self.batch)]
        batches, singles = [], []
        for _ in range(self.rounds):
            before = time.perf_counter()
            client.predict_batch(items)
            batches.append(time.perf_counter() - before)
            before = time.perf_counter()
            for fingerprint, features, scenario in items:
                client.predict(fingerprint, features, scenario)
            singles.append(time.perf_counter() - before)
            self.progress.update(self.batch + 1)
        return summary(batches), summary(singles)

    def breaker_open_call_us(self):
        """Median µs of a predict while the breaker is open (opened by a refused connect)."""
        client = MLClient(f"http://127.0.0.1:{free_port()}", max_retries=0,
                          failure_threshold=1, reset_timeout=3600.0)
        try:
            client.predict("open", self.features)
        except ServiceUnavailable:
            pass
        durations = []
        for _ in range(self.breaker_calls):
            before = time.perf_counter_ns()
            try:
                client.predict("open", self.features)
            except CircuitOpen:
                pass
            durations.append(time.perf_counter_ns() - before)
        self.progress.update(self.breaker_calls)
        if client.breaker.state != "open":
            raise CommandError("the breaker did not stay open")
        return statistics.median(durations) / 1000


def summary(durations):
    """Calls, calls per second of their summed time, median and 99th percentile in ms."""
    ordered = sorted(durations)
    return {
        "calls": len(durations),
        "requests_per_s": len(durations) / sum(durations),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def answers(url):
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def running_service(url):
    """Yields False when the service at `url` answers; else starts it (loopback only),
    yields True, and stops it afterwards."""
    if answers(url):
        yield False
        return
    address = urlsplit(url)
    if address.hostname not in ("127.0.0.1", "localhost", "::1") or address.port is None:
        raise CommandError(f"no ML service answers at {url}, and it is not a loopback "
                           "address with a port where this command could start one")
    service = subprocess.Popen(
        [sys.executable, "manage.py", "mlservice", "--bind", f"{address.hostname}:"
         f"{address.port}", "--workers", "2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(url):
            if service.poll() is not None or time.monotonic() > deadline:
                raise CommandError(f"the ML service started at {url} did not answer /health "
                                   f"(`manage.py mlservice --bind {address.netloc}` says why)")
            time.sleep(0.2)
        yield True
    finally:
        stop(service)


def table(figures):
    rows = [("case", "calls", "req/s", "p50 ms", "p99 ms")]
    for name, label in [("new_connection", "new connection per call"), ("pooled", "pooled"),
                        ("uncached", "prediction, uncached"), ("cached", "prediction, cached"),
                        ("batch", f"batch of {figures['batch_items']}"),
                        ("singles", f"{figures['batch_items']} single calls")]:
        case = figures[name]
        rows.append((label, f"{case['calls']}", f"{case['requests_per_s']:,.0f}",
                     f"{case['p50_ms']:.3f}", f"{case['p99_ms']:.3f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = [
        "  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                  for column, (cell, width) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.append("")
    for figure, (relation, bound) in GOALS.items():
        value = figures[figure]
        met = value >= bound if relation == ">=" else value < bound
        lines.append(f"{figure:<26} {value:>10.2f}   goal {relation} {bound:g}: "
                     f"{'met' if met else 'MISSED'}")
    started = "started by this command" if figures["service_started"] else "already running"
    lines.append(f"service {figures['service']} ({started}); prediction cache: "
                 f"{figures['prediction_cache']}")
    return "\n".join(lines)
