"""Cached predictions (mlclient.predictions): served from the `predictions` cache after the
first call, a batch asking only for the misses, concurrent misses asking once, the model
version learnt every few seconds, and the last good value marked stale when the service is
stopped, failing or behind an open breaker. Requests are counted at a fault server."""

import threading

import pytest
from django.core.cache import caches

from mlclient import MLClient, Prediction, PredictionError, PredictionUnavailable
from mlclient.predictions import CachedPredictions, model_version, prediction_key
from tests.fault_server import Answer, FaultServer, Gate, Stall
from tests.mlservice_process import Service, features
from tests.test_workers import until


@pytest.fixture(autouse=True)
def empty_caches():
    caches["predictions"].clear()
    model_version.cache_clear()
    yield
    caches["predictions"].clear()
    model_version.cache_clear()


@pytest.fixture
def server():
    running = FaultServer()
    yield running
    running.close()


def cached_predictions(url, **options):
    options = {"max_retries": 0, "failure_threshold": 100, **options}
    return CachedPredictions(MLClient(url, **options))


def batch_fingerprints(server):
    return [[item["fingerprint"] for item in request.body["items"]]
            for request in server.requests_to("/api/v1/predict/batch")]


def test_the_second_call_is_served_from_the_cache(server):
    predictions = cached_predictions(server.url)

    first = predictions.current("f1", features(mean_ms=5.0))
    second = predictions.current("f1", features(mean_ms=5.0))

    assert isinstance(first, Prediction) and first == second and not second.stale
    assert len(server.requests_to("/api/v1/predict")) == 1
    assert caches["predictions"].get(prediction_key("f1", "current", "v-test")) == first


def test_scenarios_are_cached_apart(server):
    predictions = cached_predictions(server.url)

    predictions.current("f1", features(), "current")
    predictions.current("f1", features(), "optimized")

    assert len(server.requests_to("/api/v1/predict")) == 2


def test_the_model_version_is_asked_once_for_many_predictions(server):
    predictions = cached_predictions(server.url)

    for index in range(20):
        predictions.current(f"f{index}", features())

    assert len(server.requests_to("/api/v1/model")) == 1
    assert len(server.requests_to("/api/v1/predict")) == 20


def test_a_new_model_version_moves_the_keys(server):
    predictions = cached_predictions(server.url)
    predictions.current("f1", features())

    server.version = "v-next"
    model_version.cache_clear()  # what VERSION_TTL seconds do
    answer = predictions.current("f1", features())

    assert answer.model_version == "v-next"
    assert len(server.requests_to("/api/v1/predict")) == 2


def test_a_batch_asks_only_for_the_keys_not_cached(server):
    predictions = cached_predictions(server.url)
    predictions.current("a", features(mean_ms=1.0))

    first = predictions.many([("a", features(mean_ms=1.0), "current"),
                              ("b", features(mean_ms=2.0), "current"),
                              ("b", features(mean_ms=2.0), "current"),
                              ("c", features(mean_ms=3.0), "optimized")])
    second = predictions.many([("c", features(mean_ms=3.0), "optimized"),
                               ("d", features(mean_ms=4.0), "current"),
                               ("a", features(mean_ms=1.0), "current")])
    third = predictions.many([("d", features(mean_ms=4.0), "current")])

    assert [p.predicted_ms for p in first] == [1.0, 2.0, 2.0, 3.0]
    assert [p.predicted_ms for p in second] == [3.0, 4.0, 1.0]
    assert third[0].predicted_ms == 4.0 and not third[0].stale
    assert batch_fingerprints(server) == [["b", "c"], ["d"]]


def test_features_given_as_callables_are_computed_for_the_keys_not_cached_only(server):
    predictions = cached_predictions(server.url)
    predictions.current("a", features(mean_ms=1.0))
    computed = []

    def features_of(fingerprint, mean_ms):
        def compute():
            computed.append(fingerprint)
            return features(mean_ms=mean_ms)
        return compute

    results = predictions.many([("a", features_of("a", 1.0), "current"),
                                ("b", features_of("b", 2.0), "current")])

    assert [r.predicted_ms for r in results] == [1.0, 2.0]
    assert computed == ["b"] and batch_fingerprints(server) == [["b"]]


def test_concurrent_misses_of_one_key_ask_the_service_once(server):
    predictions = cached_predictions(server.url)
    model_version(predictions.client)  # learnt before the callers start
    gate = threading.Event()
    server.script = [Gate(gate)]
    answers = []

    def call():
        answers.append(predictions.current("hot", features(mean_ms=7.0)))

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    until(lambda: len(server.requests_to("/api/v1/predict")) == 1, seconds=10)
    gate.set()
    for thread in threads:
        thread.join(10)

    assert len(answers) == 12 and {a.predicted_ms for a in answers} == {7.0}
    assert len(server.requests_to("/api/v1/predict")) == 1


def test_a_refused_item_is_a_prediction_error_and_is_not_cached(server):
    predictions = cached_predictions(server.url)
    predictions.current("warm", features())
    server.script = [Answer(400, {"error": "features.mean_ms: expected a number",
                                  "field": "features.mean_ms"})]

    refused = predictions.current("f1", features())
    predictions.current("f1", features())

    assert isinstance(refused, PredictionError) and refused.field == "features.mean_ms"
    assert not refused.available
    assert len(server.requests_to("/api/v1/predict")) == 3


def test_a_refused_batch_item_gets_its_error_and_the_others_their_predictions(server):
    predictions = cached_predictions(server.url)
    model_version(predictions.client)
    server.script = [Answer(200, {"items": [
        {"error": "items[0].features.mean_ms: expected a number", "field": "x"},
        {"fingerprint": "ok", "scenario": "current", "predicted_ms": 2.0, "confidence": 0.5,
         "interval_ms": [1.0, 3.0], "model_version": "v-test", "source": "model"},
    ]}), Answer()]

    first = predictions.many([("bad", features(), "current"), ("ok", features(), "current")])
    second = predictions.many([("bad", features(), "current"), ("ok", features(), "current")])

    assert [type(r) for r in first] == [PredictionError, Prediction]
    assert batch_fingerprints(server) == [["bad", "ok"], ["bad"]]
    assert isinstance(second[0], Prediction)


def test_with_the_service_down_the_last_good_value_comes_back_marked_stale(server):
    predictions = cached_predictions(server.url)
    good = predictions.current("f1", features(mean_ms=9.0))
    caches["predictions"].delete(prediction_key("f1", "current", "v-test"))  # expired
    server.close()

    stale = predictions.current("f1", features(mean_ms=9.0))
    never = predictions.current("f2", features())

    assert stale.stale and stale.available and stale.predicted_ms == good.predicted_ms
    assert isinstance(never, PredictionUnavailable) and not never.available
    assert "Connection refused" in never.reason


def test_a_batch_with_the_service_down_mixes_cached_stale_and_unavailable(server):
    predictions = cached_predictions(server.url)
    predictions.many([("a", features(mean_ms=1.0), "current"),
                      ("b", features(mean_ms=2.0), "current")])
    caches["predictions"].delete(prediction_key("b", "current", "v-test"))
    server.script = [Answer(503, {"error": "overloaded"})]

    results = predictions.many([("a", features(), "current"), ("b", features(), "current"),
                                ("c", features(), "current")])

    assert [type(r) for r in results] == [Prediction, Prediction, PredictionUnavailable]
    assert [r.stale for r in results[:2]] == [False, True]
    assert "503 overloaded" in results[2].reason


def test_with_the_breaker_open_no_request_is_made_and_stale_values_come_back(server):
    predictions = cached_predictions(server.url, failure_threshold=2)
    predictions.current("f1", features(mean_ms=3.0))
    caches["predictions"].delete(prediction_key("f1", "current", "v-test"))
    server.script = [Answer(503)]
    predictions.current("x", features())
    predictions.current("y", features())
    assert predictions.client.breaker.state == "open"
    asked = len(server.received)

    stale = predictions.current("f1", features())
    batch = predictions.many([("f1", features(), "current"), ("z", features(), "current")])

    assert stale.stale and stale.predicted_ms == 3.0
    assert batch[0].stale and "circuit open" in batch[1].reason
    assert len(server.received) == asked


def test_the_module_functions_use_the_client_from_settings(server, settings):
    from mlclient import predictions

    settings.ML_SERVICE_URL = server.url
    first = predictions.current("f1", features(mean_ms=6.0))
    both = predictions.many([("f1", features(), "current"), ("f2", features(), "current")])

    assert first.predicted_ms == 6.0 and both[0] == first
    assert batch_fingerprints(server) == [["f2"]]


@pytest.mark.django_db
def test_a_stopped_real_service_gives_the_last_good_value_stale(tmp_path):
    service = Service(tmp_path / "service.log", workers=1)
    try:
        predictions = cached_predictions(service.url)
        good = predictions.current("abc", features(mean_ms=12.0))
        assert good.source == "baseline" and good.predicted_ms == 12.0
    finally:
        service.stop()
    caches["predictions"].delete(prediction_key("abc", "current", good.model_version))

    stale = predictions.current("abc", features(mean_ms=12.0))

    assert stale.stale and stale.predicted_ms == 12.0


def test_callers_queued_behind_a_timed_out_call_get_its_failure_at_once(server):
    """One read timeout for all of them, not one each: the service is asked once."""
    predictions = cached_predictions(server.url, read_timeout=0.5)
    model_version(predictions.client)
    server.script = [Stall(5.0)]
    answers = []

    def call():
        answers.append(predictions.current("slow", features()))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(answers) == 8
    assert all(isinstance(a, PredictionUnavailable) and "timed out" in a.reason
               for a in answers)
    assert len(server.requests_to("/api/v1/predict")) == 1
