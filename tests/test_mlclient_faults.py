"""mlclient against a fault-injecting HTTP server on loopback (tests/fault_server.py): the
retry policy (which failures, how long between tries, Retry-After capped), timeouts, 4xx,
the circuit breaker's transitions with real calls, connection reuse and request ids."""

import os
import subprocess
import sys
import threading

import pytest
from django.http import HttpResponse
from django.test import override_settings
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from mlclient import BadRequest, CircuitOpen, MLClient, ServiceUnavailable
from pganalytics.request_id import RequestIdMiddleware
from tests.fault_server import Answer, FaultServer, Gate, Reset, Stall
from tests.mlservice_process import ROOT, features
from tests.test_workers import until

INCOMING_ID = "incoming-0123"


def incoming_request_id():
    """What the settings' MLCLIENT_REQUEST_ID names in test_from_settings...: a page's id."""
    return INCOMING_ID


@pytest.fixture
def serve():
    """serve(*script) -> a FaultServer answering that script, closed after the test."""
    started = []

    def start(*script):
        started.append(FaultServer(script or (Answer(),)))
        return started[-1]

    yield start
    for server in started:
        server.close()


def client_of(server, **options):
    options = {"connect_timeout": 1.0, "read_timeout": 5.0, **options}
    return MLClient(server.url, **options)


def gaps(received):
    return [later.at - earlier.at for earlier, later in zip(received, received[1:])]


def in_thread(call, seconds=30):
    """call() in a thread; its result or exception, or a failure if it is still running
    after `seconds` (a Retry-After obeyed without a cap would hold it for an hour)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except Exception as error:  # handed to the test
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still waiting after {seconds} s"
    return outcome


# --- retries ----------------------------------------------------------------------------

def test_503s_then_200_succeeds_after_waits_that_follow_the_backoff(serve):
    server = serve(Answer(503), Answer(503), Answer(503), Answer(200))
    client = client_of(server, max_retries=3, backoff_initial=0.1, backoff_multiplier=2.0)

    assert client.health()["status"] == "ok"

    waits = gaps(server.received)
    assert len(waits) == 3
    assert waits[0] >= 0.1 and waits[1] >= 0.2 and waits[2] >= 0.4
    stats = client.stats()
    assert stats["retries"] == 3 and stats["failures"] == 0 and stats["calls"] == 1


def test_the_backoff_follows_its_configuration(serve):
    server = serve(Answer(502), Answer(504), Answer(200))
    client = client_of(server, max_retries=2, backoff_initial=0.3, backoff_multiplier=3.0,
                       backoff_max=10.0)

    client.health()

    waits = gaps(server.received)
    assert waits[0] >= 0.3 and waits[1] >= 0.9


def test_the_backoff_is_capped(serve):
    server = serve(Answer(503), Answer(503), Answer(200))
    client = client_of(server, max_retries=2, backoff_initial=0.2, backoff_multiplier=50.0,
                       backoff_max=0.25)

    outcome = in_thread(client.health, seconds=5)  # 10 s if the cap were ignored

    assert "result" in outcome and len(server.received) == 3


def test_503s_past_the_retries_are_service_unavailable(serve):
    server = serve(Answer(503, {"error": "no model loaded"}))
    client = client_of(server, max_retries=2, backoff_initial=0.01)

    with pytest.raises(ServiceUnavailable, match="503 no model loaded"):
        client.predict("f", features())
    assert len(server.received) == 3
    assert client.breaker.consecutive_failures == 1


def test_a_huge_retry_after_is_capped_at_the_maximum_backoff(serve):
    server = serve(Answer(429, {"error": "slow down"}, {"Retry-After": "3600"}), Answer(200))
    client = client_of(server, max_retries=3, backoff_max=0.3)

    outcome = in_thread(client.health)

    assert outcome["result"]["status"] == "ok"
    assert len(server.received) == 2 and gaps(server.received)[0] >= 0.3


def test_429s_past_the_retries_are_unavailable_not_bad_request(serve):
    server = serve(Answer(429, {"error": "slow down"}, {"Retry-After": "0"}))
    client = client_of(server, max_retries=1, backoff_initial=0.01)

    with pytest.raises(ServiceUnavailable, match="429"):
        client.health()
    assert len(server.received) == 2


def test_a_reset_connection_is_retried(serve):
    server = serve(Reset(), Answer(200))
    client = client_of(server, backoff_initial=0.01)

    prediction = client.predict("f", features(mean_ms=4.0))

    assert prediction.predicted_ms == 4.0
    assert len(server.received) == 2 and client.stats()["retries"] == 1


def test_resets_past_the_retries_are_service_unavailable(serve):
    server = serve(Reset())
    client = client_of(server, max_retries=2, backoff_initial=0.01)

    with pytest.raises(ServiceUnavailable):
        client.predict("f", features())
    assert len(server.received) == 3


def test_a_stall_past_the_read_timeout_is_retried(serve):
    server = serve(Stall(3.0), Answer(200))
    client = client_of(server, read_timeout=0.3, backoff_initial=0.01)

    prediction = client.predict("f", features(mean_ms=2.0))

    assert prediction.predicted_ms == 2.0 and len(server.received) == 2
    assert gaps(server.received)[0] >= 0.3


def test_stalls_past_the_retries_are_service_unavailable(serve):
    server = serve(Stall(3.0))
    client = client_of(server, read_timeout=0.2, max_retries=1, backoff_initial=0.01)

    with pytest.raises(ServiceUnavailable, match="timed out"):
        client.predict_batch([("f", features(), "current")])
    assert len(server.received) == 2


def test_starting_a_training_job_is_never_sent_twice(serve):
    server = serve(Stall(3.0), Answer(202))
    client = client_of(server, read_timeout=0.3, backoff_initial=0.01)

    with pytest.raises(ServiceUnavailable):
        client.train(7)
    assert len(server.requests_to("/api/v1/train")) == 1


def test_starting_a_training_job_is_not_retried_after_a_503(serve):
    """A 503 is not retried for train either: the server may have queued the job."""
    server = serve(Answer(503), Answer(202))
    client = client_of(server, backoff_initial=0.01)

    with pytest.raises(ServiceUnavailable):
        client.train(7)
    assert len(server.received) == 1


def test_a_400_is_bad_request_not_retried_and_no_breaker_failure(serve):
    server = serve(Answer(400, {"error": "scenario: unknown", "field": "scenario"}))
    client = client_of(server, failure_threshold=2)

    for _ in range(3):
        with pytest.raises(BadRequest) as refused:
            client.predict("f", features(), "later")
        assert refused.value.field == "scenario" and refused.value.status == 400

    assert len(server.received) == 3  # one request per call
    assert client.breaker.state == "closed" and client.breaker.consecutive_failures == 0
    assert client.stats()["failures"] == 0 and client.stats()["retries"] == 0


def test_a_500_is_unavailable_at_once(serve):
    server = serve(Answer(500, {"error": "internal error"}))
    client = client_of(server)

    with pytest.raises(ServiceUnavailable, match="500 internal error"):
        client.health()
    assert len(server.received) == 1


# --- the circuit breaker ----------------------------------------------------------------

def opened(server, threshold=3, reset_timeout=30.0):
    """A client whose breaker `threshold` failed calls (no retries) have opened."""
    client = client_of(server, max_retries=0, failure_threshold=threshold,
                       reset_timeout=reset_timeout)
    for _ in range(threshold):
        with pytest.raises(ServiceUnavailable):
            client.health()
    return client


def test_n_consecutive_failures_open_the_breaker_and_calls_then_fail_fast(serve):
    server = serve(Answer(503))
    client = client_of(server, max_retries=0, failure_threshold=3)

    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            client.health()
        assert client.breaker.state == "closed"
    with pytest.raises(ServiceUnavailable):
        client.health()
    assert client.breaker.state == "open"

    for _ in range(20):
        with pytest.raises(CircuitOpen, match="circuit open after 3 consecutive failures"):
            client.predict("f", features())
    assert len(server.received) == 3
    assert client.stats()["consecutive_failures"] == 3


def test_a_success_between_failures_restarts_the_count(serve):
    server = serve(Answer(503), Answer(503), Answer(200), Answer(503), Answer(503), Answer(200))
    client = client_of(server, max_retries=0, failure_threshold=3)

    for _ in range(6):
        try:
            client.health()
        except ServiceUnavailable:
            pass
    assert client.breaker.state == "closed" and len(server.received) == 6


def test_half_open_lets_exactly_one_trial_through_many_concurrent_callers(serve):
    server = serve(Answer(503))
    client = opened(server, reset_timeout=0.3)
    gate = threading.Event()
    server.script = [Gate(gate, Answer(200))]
    until(lambda: client.breaker.state == "half_open", seconds=5)

    callers, start = 24, threading.Barrier(24)
    outcomes = []

    def call():
        start.wait()
        try:
            client.health()
            outcomes.append("ok")
        except CircuitOpen:
            outcomes.append("circuit_open")

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    until(lambda: outcomes.count("circuit_open") == callers - 1, seconds=10)
    assert len(server.received) == 3 + 1  # the trial is at the server, held by the gate
    gate.set()
    for thread in threads:
        thread.join(10)

    assert sorted(outcomes) == ["circuit_open"] * (callers - 1) + ["ok"]
    assert client.breaker.state == "closed"
    client.health()  # closed: calls go through again
    assert len(server.received) == 3 + 2


def test_a_failed_trial_opens_the_breaker_again(serve):
    server = serve(Answer(503))
    client = opened(server, reset_timeout=0.3)
    until(lambda: client.breaker.state == "half_open", seconds=5)

    with pytest.raises(ServiceUnavailable):
        client.health()  # the trial

    assert client.breaker.state == "open"
    with pytest.raises(CircuitOpen):
        client.health()
    assert len(server.received) == 3 + 1


def test_a_refused_trial_closes_the_breaker(serve):
    """A 4xx trial shows the service answers: not a failure."""
    server = serve(Answer(503))
    client = opened(server, reset_timeout=0.3)
    server.script = [Answer(400, {"error": "bad"})]
    until(lambda: client.breaker.state == "half_open", seconds=5)

    with pytest.raises(BadRequest):
        client.health()

    assert client.breaker.state == "closed"


# --- connections, request ids, settings, metrics ----------------------------------------

def test_sequential_calls_reuse_one_connection(serve):
    server = serve()
    client = client_of(server)

    for index in range(50):
        client.predict(f"f{index}", features())

    assert len(server.received) == 50 and server.connections == 1
    assert client.stats()["connections_made"] == 1 and client.stats()["idle"] == 1


def test_concurrent_calls_open_no_more_connections_than_threads(serve):
    server = serve()
    client = client_of(server, pool_size=4)

    def calls():
        for index in range(25):
            client.predict(f"f{index}", features())

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(server.received) == 100 and server.connections <= 4


def test_the_incoming_request_id_is_sent_with_every_try(serve):
    server = serve(Answer(503), Answer(200))
    client = client_of(server, backoff_initial=0.01, request_id=lambda: "page-42")

    client.health()

    assert [r.headers["X-Request-ID"] for r in server.received] == ["page-42", "page-42"]


def test_without_an_incoming_id_every_call_sends_a_fresh_one(serve):
    server = serve()
    client = client_of(server)

    client.health()
    client.health()

    sent = [r.headers["X-Request-ID"] for r in server.received]
    assert len(set(sent)) == 2 and all(len(value) == 32 for value in sent)


def test_from_settings_is_shared_and_forwards_the_id_the_setting_names(serve, settings):
    server = serve()
    settings.ML_SERVICE_URL = server.url
    settings.MLCLIENT_REQUEST_ID = "tests.test_mlclient_faults.incoming_request_id"

    client = MLClient.from_settings()
    client.health()

    assert MLClient.from_settings() is client
    assert server.received[0].headers["X-Request-ID"] == INCOMING_ID
    with override_settings(CIRCUIT_FAILURE_THRESHOLD=9):
        rebuilt = MLClient.from_settings()
    assert rebuilt is not client and rebuilt.breaker.failure_threshold == 9


def test_from_settings_with_overrides_is_another_shared_client(serve, settings):
    """The pages' client: the settings' service and breaker threshold, its own timeout,
    retries and breaker."""
    server = serve(Answer(503))
    settings.ML_SERVICE_URL = server.url
    settings.CIRCUIT_FAILURE_THRESHOLD = 1

    quick = MLClient.from_settings(read_timeout=0.5, max_retries=0)
    with pytest.raises(ServiceUnavailable):
        quick.health()

    assert MLClient.from_settings(max_retries=0, read_timeout=0.5) is quick
    assert quick.timeout[1] == 0.5 and len(server.received) == 1  # no retry
    shared = MLClient.from_settings()
    assert shared is not quick and shared.timeout[1] == settings.ML_SERVICE_TIMEOUT
    assert (quick.breaker.state, shared.breaker.state) == ("open", "closed")


def test_from_settings_reads_every_knob(serve, settings):
    server = serve()
    settings.ML_SERVICE_URL = server.url
    settings.ML_SERVICE_TIMEOUT = 7.0
    settings.MAX_HTTP_CONNS = 3
    settings.RETRY_MAX_ATTEMPTS = 4
    settings.RETRY_INITIAL_BACKOFF = 0.05
    settings.RETRY_BACKOFF_MULTIPLIER = 3.0
    settings.RETRY_MAX_BACKOFF = 1.5
    settings.CIRCUIT_RESET_TIMEOUT = 12.0

    client = MLClient.from_settings()

    retry = client.session.get_adapter(server.url).max_retries
    assert client.timeout[1] == 7.0
    assert client.session.get_adapter(server.url)._pool_maxsize == 3
    assert (retry.total, retry.backoff_initial, retry.backoff_multiplier, retry.backoff_max) == (
        4, 0.05, 3.0, 1.5)
    assert client.breaker.reset_timeout == 12.0


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_prometheus_counts_outcomes_retries_and_the_breaker_state(serve):
    server = serve(Answer(503), Answer(200), Answer(400, {"error": "no"}), Answer(503))
    client = client_of(server, max_retries=1, backoff_initial=0.01, failure_threshold=1)
    before = {outcome: sample("mlclient_calls_total", outcome=outcome)
              for outcome in ("ok", "bad_request", "unavailable", "circuit_open")}
    retries = sample("mlclient_retries_total")
    observed = sample("mlclient_call_seconds_count")

    client.health()  # 503 then 200: ok after a retry
    with pytest.raises(BadRequest):
        client.health()
    with pytest.raises(ServiceUnavailable):
        client.health()  # 503, 503: opens the breaker
    with pytest.raises(CircuitOpen):
        client.health()

    for outcome in before:
        assert sample("mlclient_calls_total", outcome=outcome) == before[outcome] + 1, outcome
    assert sample("mlclient_retries_total") == retries + 2
    assert sample("mlclient_call_seconds_count") == observed + 3
    assert sample("mlclient_breaker_state") == 2


def test_an_open_breaker_call_sends_nothing_and_returns_at_once(serve):
    """Cost is measured by bench_mlclient; here: no request, and no retry wait."""
    server = serve(Answer(503))
    client = opened(server)
    for _ in range(1000):
        with pytest.raises(CircuitOpen):
            client.health()
    assert len(server.received) == 3
    assert client.stats()["calls"] == 1003


def test_metrics_are_written_per_process_in_multiprocess_mode(serve, tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR set before Python starts, as under gunicorn: two
    processes' calls add up in what a scrape reads."""
    server = serve(Answer(503), Answer(200))
    script = (
        "from mlclient import MLClient\n"
        f"MLClient({server.url!r}, backoff_initial=0.01).health()\n"
    )
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment, check=True,
                       timeout=60)

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("mlclient_calls_total", {"outcome": "ok"}) == 2
    assert registry.get_sample_value("mlclient_retries_total") == 1  # the script's one 503
    assert registry.get_sample_value("mlclient_call_seconds_count") == 2


def test_a_page_views_id_follows_it_to_the_service(serve, settings, rf):
    """The project's setting: pganalytics.request_id's middleware sets the id, the client
    reads it through MLCLIENT_REQUEST_ID while the page is served."""
    server = serve()
    settings.ML_SERVICE_URL = server.url

    def page(request):
        MLClient.from_settings().health()
        return HttpResponse("ok")

    response = RequestIdMiddleware(page)(rf.get("/", HTTP_X_REQUEST_ID="page-view-77"))

    assert response["X-Request-ID"] == "page-view-77"
    assert server.received[0].headers["X-Request-ID"] == "page-view-77"


def test_a_fresh_process_shows_the_series_on_metrics_before_any_call():
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "print(Client(HTTP_HOST='localhost').get('/metrics').content.decode())\n"
    )
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "pganalytics.settings"}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    shown = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment,
                           check=True, capture_output=True, text=True, timeout=60).stdout

    for outcome in ("ok", "bad_request", "unavailable", "circuit_open"):
        assert f'mlclient_calls_total{{outcome="{outcome}"}} 0.0' in shown
    assert "mlclient_breaker_state 0.0" in shown and "mlclient_retries_total 0.0" in shown
