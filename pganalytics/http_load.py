"""HTTP load for the benchmarks: a gunicorn of their own, and concurrent clients timing it."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
START_SECONDS = 60
REQUEST_TIMEOUT_SECONDS = 30


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gunicorn:
    """gunicorn serving `app` (a gunicorn app spec) with `workers` on a free loopback port,
    with the project's gunicorn.conf.py, apart from any other server: no Prometheus
    directory (gunicorn.conf.py would empty a running server's), no control socket."""

    def __init__(self, app, workers, environ=os.environ):
        self.port = free_port()
        environment = {**environ}
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [
                GUNICORN, "-c", "gunicorn.conf.py", "--workers", str(workers),
                "--bind", f"127.0.0.1:{self.port}", "--no-control-socket", app,
            ],
            cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_until_serving(self, path):
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.stop()[-2000:]}")
            try:
                if get(self.port, path)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not serve {path} within {START_SECONDS}s")

    def stop(self):
        """Stop it; returns what it logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.log.seek(0)
        return self.log.read()


def get(port, path):
    """(status, body) of one GET on a new connection (sync workers close each one)."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response.status, response.read()
    finally:
        client.close()


@dataclass
class Load:
    """What one run of concurrent clients measured: each answered request's seconds."""

    seconds: float = 0.0
    latencies: list = field(default_factory=list)
    errors: int = 0

    def add(self, other):
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors

    @property
    def requests_per_second(self):
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction):
        """Milliseconds (2 decimals) under which `fraction` of the answers came; None if none."""
        ordered = sorted(self.latencies)
        if not ordered:
            return None
        return round(1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def run(port, path, requests, concurrency, progress=None):
    """`requests` GETs of `path` from `concurrency` threads, each on a new connection; a
    status other than 200, or no answer, is an error. `progress(1)` after each."""
    load, lock, remaining = Load(), threading.Lock(), [requests]

    def client():
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                ok = get(port, path)[0] == 200
            except OSError:
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    load.latencies.append(elapsed)
                else:
                    load.errors += 1
            if progress is not None:
                progress(1)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.perf_counter() - started
    return load
