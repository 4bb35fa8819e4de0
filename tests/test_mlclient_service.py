"""mlclient against the real ML service (`manage.py mlservice` as a process, on the test
database): every call of the public surface, typed answers and typed errors, the request id
in the service's log, and connections kept alive between calls."""

import uuid

import pytest

from mlclient import (
    BadRequest,
    MLClient,
    MLServiceError,
    ModelInfo,
    Prediction,
    PredictionError,
    ServiceUnavailable,
    TrainingJob,
)
from mlservice.models import TrainingJob as TrainingJobRow
from pganalytics.analytics.features import FEATURE_NAMES
from tests.mlservice_process import Service, features
from tests.test_workers import until

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def service(django_db_setup, django_db_blocker, tmp_path_factory):
    running = Service(tmp_path_factory.mktemp("mlservice") / "service.log")
    yield running
    running.stop()
    with django_db_blocker.unblock():
        TrainingJobRow.objects.all().delete()


@pytest.fixture
def client(service):
    made = MLClient(service.url, read_timeout=10.0)
    yield made
    made.close()


def test_health_and_model_info(client):
    assert client.health() == {"status": "ok", "model_version": None}
    info = client.model_info()
    assert isinstance(info, ModelInfo)
    assert info.model_version == "baseline" and info.source == "baseline"
    assert info.feature_names == tuple(FEATURE_NAMES)


def test_predict_returns_a_prediction(client):
    prediction = client.predict("abc123", features(mean_ms=10.0, stddev_ms=5.0), "optimized")

    assert isinstance(prediction, Prediction)
    assert (prediction.fingerprint, prediction.scenario) == ("abc123", "optimized")
    assert prediction.predicted_ms == 10.0
    low, high = prediction.interval_ms
    assert low < 10.0 < high and 0 < prediction.confidence < 1
    assert (prediction.model_version, prediction.source) == ("baseline", "baseline")
    assert prediction.stale is False and prediction.available


def test_predict_batch_keeps_order_and_gives_refused_items_their_error(client):
    good = features(mean_ms=3.0)
    results = client.predict_batch([
        ("a", good, "current"), ("b", {"mean_ms": 1.0}, "current"), ("c", good, "optimized"),
    ])

    assert [type(result) for result in results] == [Prediction, PredictionError, Prediction]
    assert [r.fingerprint for r in results] == ["a", "b", "c"]
    assert results[1].field == "items[1].features.parse_error"
    assert results[2].scenario == "optimized" and results[2].predicted_ms == 3.0


def test_a_batch_over_the_contract_limit_is_sent_in_several_calls(client, service):
    items = [(f"f{index}", features(mean_ms=float(index)), "current") for index in range(501)]
    results = client.predict_batch(items)

    assert [r.predicted_ms for r in results] == [float(index) for index in range(501)]
    assert service.log().count("POST /api/v1/predict/batch 200") >= 2


def test_a_refused_request_is_bad_request_and_no_breaker_failure(client):
    with pytest.raises(BadRequest) as refused:
        client.predict("a", features(), "tomorrow")

    assert refused.value.status == 400 and refused.value.field == "scenario"
    assert isinstance(refused.value, MLServiceError)
    assert client.breaker.state == "closed" and client.breaker.consecutive_failures == 0
    assert client.stats()["failures"] == 0


def test_train_and_training_status(client):
    job = client.train(7)
    assert isinstance(job, TrainingJob) and job.status == "queued"

    status = client.training_status(job.job_id)
    assert status.job_id == job.job_id and status.status in {"queued", "running", "done",
                                                              "failed"}
    with pytest.raises(BadRequest) as unknown:
        client.training_status(str(uuid.uuid4()))
    assert unknown.value.status == 404


def test_the_request_id_reaches_the_service_log(service):
    incoming = f"page-view-{uuid.uuid4().hex[:8]}"
    client = MLClient(service.url, request_id=lambda: incoming)
    client.health()

    assert until(lambda: f"[{incoming}] GET /health 200" in service.log())


def test_without_an_incoming_request_each_call_gets_a_fresh_id(service):
    client = MLClient(service.url, request_id=lambda: None)
    client.health()
    client.health()

    lines = [line for line in service.log().splitlines() if "GET /health 200" in line]
    ids = {line.split("[", 1)[1].split("]", 1)[0] for line in lines[-2:]}
    assert len(ids) == 2 and "-" not in ids


def test_a_stopped_service_is_unavailable(tmp_path):
    stopped = Service(tmp_path / "service.log", workers=1)
    stopped.stop()
    client = MLClient(stopped.url, max_retries=1, backoff_initial=0.01)

    with pytest.raises(ServiceUnavailable, match="GET /health"):
        client.health()
    assert client.breaker.consecutive_failures == 1 and client.stats()["retries"] == 1
