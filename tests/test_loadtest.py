"""loadtest --serve on a small scale against real gunicorn workers, Redis and ML service:
the figures DESIGN names, the hit ratio as the X-Cache headers counted it (timing goals are
the benchmark's, not asserted here)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import child_environment
from tests.test_workers import ROOT

SMALL = ["--concurrency=3", "--requests=15", "--workers=2", "--json"]


def loadtest(*arguments):
    finished = subprocess.run(
        [sys.executable, "manage.py", "loadtest", *arguments], cwd=ROOT, capture_output=True,
        text=True, env=child_environment(), timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(finished.stdout)


@pytest.mark.django_db(transaction=True)  # the served workers read what the test committed
def test_loadtest_serves_caches_compares_and_reports(two_snapshots):
    figures = loadtest(
        "--serve", "--compare", "--ceiling", "--database", two_snapshots.name, *SMALL
    )

    for key in ("hit_ratio", "errors", "cached_vs_uncached", "cached_vs_ceiling", "p99_ms"):
        assert figures[key] is not None, key
    assert figures["errors"] == 0
    for run in ("cached", "uncached", "ceiling"):
        assert figures[run]["requests"] == 45 and figures[run]["errors"] == 0
        assert 0 < figures[run]["p50_ms"] <= figures[run]["p95_ms"] <= figures[run]["p99_ms"]
    cached, uncached = figures["cached"], figures["uncached"]
    assert cached["hits"] + cached["misses"] == 45  # every answer said hit or miss
    assert cached["hits"] > 0 and figures["hit_ratio"] == cached["hits"] / 45
    assert (uncached["hits"], uncached["misses"]) == (0, 45)  # caching off: never a hit
    assert figures["ceiling"]["hit_ratio"] is None  # /healthz is not cached
    assert figures["cached_vs_uncached"] == cached["requests_per_s"] / uncached["requests_per_s"]
    assert figures["keys"] == 12 + two_snapshots.queries.count()  # top queries + query pages


@pytest.mark.django_db(transaction=True)
def test_loadtest_without_data_says_what_to_run_first():
    finished = subprocess.run(
        [sys.executable, "manage.py", "loadtest", "--url", "http://127.0.0.1:1"], cwd=ROOT,
        capture_output=True, text=True, env=child_environment(), timeout=60,
    )
    assert finished.returncode == 1 and "run `manage.py demo`" in finished.stderr
