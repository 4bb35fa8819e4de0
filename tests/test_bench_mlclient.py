"""bench_mlclient on a small scale: every figure DESIGN names, from the real service; it
starts the service when none answers at ML_SERVICE_URL and stops what it started."""

import json
import subprocess
import sys

import pytest
import requests

from tests.conftest import child_environment
from tests.mlservice_process import ROOT
from tests.test_workers import free_port

SMALL = ["--calls=30", "--batch=10", "--rounds=2", "--breaker-calls=200", "--json"]


def bench(url):
    finished = subprocess.run(
        [sys.executable, "manage.py", "bench_mlclient", *SMALL], cwd=ROOT, capture_output=True,
        text=True, env={**child_environment(), "ML_SERVICE_URL": url}, timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


@pytest.mark.django_db
def test_bench_mlclient_starts_the_service_measures_every_case_and_stops_it():
    url = f"http://127.0.0.1:{free_port()}"

    figures = bench(url)

    assert figures["service_started"] is True
    for key in ("pooled_vs_new_connection", "cached_vs_uncached", "batch_vs_single",
                "breaker_open_call_us"):
        assert figures[key] > 0, key
    for case in ("new_connection", "pooled", "uncached", "cached"):
        assert figures[case]["calls"] == 30
        assert 0 < figures[case]["p50_ms"] <= figures[case]["p99_ms"]
    assert figures["batch"]["calls"] == figures["singles"]["calls"] == 2
    assert figures["pooled_vs_new_connection"] == (
        figures["pooled"]["requests_per_s"] / figures["new_connection"]["requests_per_s"]
    )
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)  # stopped again

