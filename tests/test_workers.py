"""Serving with gunicorn and several workers: static files without DEBUG, Prometheus'
multiprocess mode summing live workers only, the pools' figures summed over the workers, and
the start-up warning about connections (gunicorn.conf.py's hooks)."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from pganalytics import pool_metrics
from pganalytics.local_servers import free_port
from tests.conftest import child_environment

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
MAX_ENTRIES = 10_000  # CACHE_MAX_SIZE below


def until(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not met within {seconds}s: {condition.__doc__}")


@pytest.fixture
def server(tmp_path):
    """gunicorn with two workers in multiprocess mode; yields (base url, metrics directory)."""
    with serving(tmp_path, os.environ) as (url, metrics_dir, _):
        yield url, metrics_dir


@contextmanager
def serving(tmp_path, environ):
    """gunicorn with two workers in multiprocess mode, `environ` its environment; yields
    (base url, metrics directory, log file)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "gauge_livesum_999999.db").write_bytes(b"an earlier run's leftover")
    environment = {
        **environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DEBUG": "false",
        "CACHE_MAX_SIZE": str(MAX_ENTRIES),
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT, env=environment, check=True, timeout=120,
    )
    url = f"http://127.0.0.1:{free_port()}"
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [GUNICORN, "-c", "gunicorn.conf.py", "--workers", "2", "--bind", url[7:],
         "--no-control-socket"],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield url, metrics_dir, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def live_gauge_pids(metrics_dir):
    return {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("gauge_livesum_*.db")}


def summed_max_entries(url):
    text = requests.get(f"{url}/metrics", timeout=5).text
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cache_max_entries" and sample.labels["cache"] == "features"
    )


def test_static_files_are_served_without_debug(server):
    url, _ = server

    def served():
        """the dashboard's script is served"""
        try:
            return requests.get(f"{url}/static/caching/dashboard.js", timeout=2).status_code == 200
        except requests.RequestException:  # not serving yet, or a worker still starting
            return False

    until(served)


def test_gauges_sum_the_live_workers_only(server):
    url, metrics_dir = server

    def reported():
        """a worker served a scrape (each syncs its caches into its own files first)"""
        try:
            requests.get(f"{url}/metrics", timeout=2)
        except requests.RequestException:  # not serving yet, or a worker still starting
            return None
        return live_gauge_pids(metrics_dir)

    workers = until(reported)
    assert 999999 not in workers  # the leftover was wiped when gunicorn started
    assert summed_max_entries(url) == MAX_ENTRIES * len(live_gauge_pids(metrics_dir))

    gone = min(workers)
    os.kill(gone, signal.SIGKILL)  # gunicorn's child_exit marks it dead, then forks another

    def dropped():
        """the killed worker's live gauges are gone"""
        return gone not in live_gauge_pids(metrics_dir)

    until(dropped)
    # Scrapes are answered after the answering worker wrote its files: the count is settled.
    assert summed_max_entries(url) == MAX_ENTRIES * len(live_gauge_pids(metrics_dir))


def scraped(url, name):
    text = requests.get(f"{url}/metrics", timeout=10).text
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    return found[0] if found else None


def test_pools_are_summed_over_workers_and_too_many_connections_are_warned_of(tmp_path, db):
    # 2 workers x 40 + the ML service's 2 workers and runner x 40: over any default server
    environment = {**child_environment(), "MAX_DATABASE_CONNS": "40", "ML_SERVICE_WORKERS": "2"}
    with serving(tmp_path, environment) as (url, metrics_dir, log_path):

        def both_workers_pooled():
            """both workers have used their pool and written its figures"""
            try:
                requests.get(f"{url}/healthz", timeout=10)
                return scraped(url, "db_pool_processes") == 2
            except requests.RequestException:  # not serving yet, or a worker still starting
                return False

        until(both_workers_pooled, seconds=60)
        size = scraped(url, "db_pool_size")
        assert size >= 2  # each keeps MAX_IDLE_DATABASE_CONNS=1 at least
        panel = pool_metrics.summed(metrics_dir)  # what the dashboard shows, from the files
        assert panel["processes"] == 2 and panel["size"] == size
        assert panel["max_size_per_process"] == 8  # this process's own (the default)
        assert panel["requests"] == scraped(url, "db_pool_requests") >= 2
        log = log_path.read_text()
    assert "may open 200 connections to the database but the server accepts" in log
    assert "MAX_DATABASE_CONNS=40" in log and "max_connections=" in log
