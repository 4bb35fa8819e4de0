"""/metrics: Django's and the caches' metrics, who may read them, and several processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import caches
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from caching import registry
from pganalytics.analytics import latency_predictions
from pganalytics.config import Config, ConfigError
from tests.fault_server import Answer, FaultServer
from tests.mlservice_process import features

ROOT = Path(__file__).resolve().parent.parent


def samples(text):
    """{(sample name, cache label or None): value} of an exposition."""
    return {
        (sample.name, sample.labels.get("cache")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client=None, **headers):
    response = (client or Client()).get("/metrics", **headers)
    return response, response.content.decode()


@pytest.mark.django_db
def test_metrics_show_requests_queries_and_each_caches_counts():
    registry.clear("fingerprints")
    cache = caches["fingerprints"]
    cache.set("k", "")
    cache.get("k")  # a falsy value: a hit
    cache.get("absent")
    client = Client()
    client.get("/healthz")  # a request with a database query
    response, text = scrape(client)

    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    found, own = samples(text), cache.metrics()
    for field in ("hits", "misses", "evictions", "expirations"):
        assert found[f"cache_{field}_total", "fingerprints"] == own[field]
    assert found["cache_entries", "fingerprints"] == own["entries"] == 1
    assert found["cache_max_entries", "fingerprints"] == own["max_entries"]
    assert {label for name, label in found if name == "cache_hits_total"} >= set(caches.settings)
    assert "django_http_requests_total_by_method_total" in text
    assert found["django_db_execute_total", None] > 0


def ml_samples(text):
    """{(sample name, outcome label or None): value} of the ML client's series."""
    return {
        (sample.name, sample.labels.get("outcome")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("mlclient_")
    }


@pytest.mark.django_db
def test_the_pages_ml_client_shows_its_calls_and_breaker_on_metrics(settings):
    server = FaultServer()
    settings.ML_SERVICE_URL = server.url
    settings.CIRCUIT_FAILURE_THRESHOLD = 1
    item = [("f00d", features(mean_ms=2.0), "current")]
    before = ml_samples(scrape()[1])
    try:
        assert latency_predictions.predict(item)[0]["status"] == "ok"  # the model, a batch
        caches["predictions"].clear()
        server.script = [Answer(503)]
        latency_predictions.predict(item)  # fails: the breaker opens
        latency_predictions.predict(item)  # not sent
    finally:
        server.close()
    after = ml_samples(scrape()[1])

    def added(name, outcome=None):
        return after[name, outcome] - before.get((name, outcome), 0.0)

    assert (added("mlclient_calls_total", "ok"), added("mlclient_calls_total", "unavailable"),
            added("mlclient_calls_total", "circuit_open")) == (2, 1, 1)
    assert added("mlclient_call_seconds_count") == 3 and added("mlclient_retries_total") == 0
    assert after["mlclient_breaker_state", None] == 2


@pytest.mark.parametrize(
    "allowed, token, headers, status",
    [
        ("127.0.0.1,::1", "", {}, 200),
        ("127.0.0.1,::1", "", {"REMOTE_ADDR": "10.1.2.3"}, 403),
        ("10.0.0.0/8", "", {"REMOTE_ADDR": "10.1.2.3"}, 200),
        ("127.0.0.1", "", {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}, 403),
        ("", "", {}, 403),
        ("", "s3cret", {"HTTP_AUTHORIZATION": "Bearer s3cret", "REMOTE_ADDR": "10.1.2.3"}, 200),
        ("", "s3cret", {"HTTP_AUTHORIZATION": "bearer s3cret"}, 200),  # schemes ignore case
        ("", "s3cret", {"HTTP_AUTHORIZATION": "Bearer wrong"}, 403),
        ("", "s3cret", {"HTTP_AUTHORIZATION": "Basic s3cret"}, 403),
        ("", "", {"HTTP_AUTHORIZATION": "Bearer "}, 403),
    ],
)
def test_access_is_limited_to_addresses_or_a_bearer_token(
    db, settings, allowed, token, headers, status
):
    settings.METRICS_ALLOWED_ADDRESSES = Config({"A": allowed}).networks("A", "")
    settings.METRICS_TOKEN = token
    response, text = scrape(**headers)
    assert response.status_code == status
    assert ("cache_hits_total" in text) == (status == 200)


@pytest.mark.django_db
def test_counters_never_go_back_when_a_read_races_a_get_in_flight():
    """A TieredCache reading shows an L1 miss before its Redis hit turns it into a hit: the
    miss count can dip by one. The counter holds its high-water mark instead of restarting."""
    cache = caches["fingerprints"]
    cache.get("absent")
    store, exported = cache._store, samples(scrape()[1])[("cache_misses_total", "fingerprints")]
    with store.lock:
        store.misses -= 1
    assert samples(scrape()[1])[("cache_misses_total", "fingerprints")] == exported
    with store.lock:
        store.misses += 3
    assert samples(scrape()[1])[("cache_misses_total", "fingerprints")] == exported + 2


def test_a_bad_address_list_names_the_variable():
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_ADDRESSES='localhost' is invalid"):
        Config({"METRICS_ALLOWED_ADDRESSES": "localhost"}).networks("METRICS_ALLOWED_ADDRESSES", "")


WORKER = """
import django, os
django.setup()
from django.core.cache import caches
from caching.prometheus import sync
cache = caches["features"]
for key in range({entries}):
    cache.set(key, key)
    cache.get(key)
cache.get("absent")
sync()
print(os.getpid())
"""
SCRAPER = """
import django
django.setup()
from django.test import Client
print(Client(HTTP_HOST="localhost").get("/metrics").content.decode())
"""


def run_python(code, environment):
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_several_processes_are_summed_in_multiprocess_mode(tmp_path):
    from prometheus_client import multiprocess

    environment = {
        **os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "pganalytics.settings",
    }
    first = int(run_python(WORKER.format(entries=3), environment))
    run_python(WORKER.format(entries=5), environment)

    found = samples(run_python(SCRAPER, environment))
    assert found["cache_hits_total", "features"] == 3 + 5
    assert found["cache_misses_total", "features"] == 2
    assert found["cache_entries", "features"] == 3 + 5  # neither worker marked dead yet

    multiprocess.mark_process_dead(first, str(tmp_path))  # what gunicorn's child_exit does
    found = samples(run_python(SCRAPER, environment))
    assert found["cache_hits_total", "features"] == 8  # counters outlive their process
    assert found["cache_entries", "features"] == 5  # gauges count live processes only


SKIPPING_REDIS = """
import django
django.setup()
from django.core.cache import caches
cache = caches["features"]
cache.get("k")  # Redis refuses: the breaker opens
cache.get("k")  # skipped
from django.test import Client
print(Client(HTTP_HOST="localhost").get("/metrics").content.decode())
"""


def test_the_redis_breaker_is_counted_per_cache(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()[1]
    environment = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "pganalytics.settings",
        "CACHE_L2_URL": f"redis://127.0.0.1:{nobody}/0",  # nobody listens there
    }
    found = samples(run_python(SKIPPING_REDIS, environment))
    assert found["cache_l2_open", "features"] == 1
    assert found["cache_l2_errors_total", "features"] >= 1
    assert found["cache_l2_skipped_total", "features"] >= 1
