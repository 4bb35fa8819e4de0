"""The ML service's v1 contract against the live process (`manage.py mlservice`, gunicorn and
its runner, on the test database): every call, bad inputs as 400s naming their field, bodies
over 1 MB and batches over 500 items refused, JSON 404s and 405s, request ids, and a
schema-driven fuzzer (schemathesis) over the OpenAPI document."""

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from mlservice.models import TrainingJob
from pganalytics.analytics.features import FEATURE_NAMES
from tests.mlservice_process import ROOT, Service, features, predict_request
from tests.test_workers import until

# The test database is made for the tests marked so; these read it through the service only.
pytestmark = pytest.mark.django_db
BASELINE_Z = 1.2816  # mean ± this many standard deviations: the baseline's 80 % interval
CONTRACT_PATHS = {
    "/health", "/api/v1/predict", "/api/v1/predict/batch", "/api/v1/train",
    "/api/v1/train/{job_id}", "/api/v1/model", "/api/v1/openapi.json",
}


@pytest.fixture(scope="module")
def service(django_db_setup, django_db_blocker, tmp_path_factory):
    """One service (two workers) for the module; the tests here store no model. The jobs its
    runner has not taken yet are deleted after it stops, so that no later test's runner does."""
    running = Service(tmp_path_factory.mktemp("mlservice") / "service.log")
    yield running
    running.stop()
    with django_db_blocker.unblock():
        TrainingJob.objects.all().delete()


def test_health_answers_ok_with_no_model_before_any_training(service):
    response = service.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_version": None}


def test_a_prediction_before_any_model_is_the_baseline(service):
    body = predict_request("abc123", "optimized", mean_ms=10.0, stddev_ms=5.0)
    response = service.post("/api/v1/predict", body)

    assert response.status_code == 200
    answer = response.json()
    low, high = answer.pop("interval_ms")
    assert low == pytest.approx(10 - BASELINE_Z * 5) and high == pytest.approx(10 + BASELINE_Z * 5)
    assert 0 < answer.pop("confidence") < 1
    assert answer == {
        "fingerprint": "abc123", "scenario": "optimized", "predicted_ms": 10.0,
        "model_version": "baseline", "source": "baseline",
    }


def test_the_scenario_defaults_to_current_and_a_wide_stddev_is_clipped_at_zero(service):
    body = {"fingerprint": "abc", "features": features(mean_ms=1.0, stddev_ms=100.0)}
    answer = service.post("/api/v1/predict", body).json()
    assert answer["scenario"] == "current"
    assert answer["interval_ms"][0] == 0.0


def test_a_batch_answers_each_item_in_its_place_errors_included(service):
    items = [
        predict_request("a", mean_ms=1.0),
        {"fingerprint": "b", "features": features(mean_ms=-1.0)},
        "not an object",
        predict_request("c", "optimized", mean_ms=3.0),
    ]
    response = service.post("/api/v1/predict/batch", {"items": items})

    assert response.status_code == 200
    answers = response.json()["items"]
    assert [answer.get("predicted_ms") for answer in answers] == [1.0, None, None, 3.0]
    assert [answer.get("field") for answer in answers] == [
        None, "items[1].features.mean_ms", "items[2]", None,
    ]
    assert answers[3]["scenario"] == "optimized" and answers[3]["fingerprint"] == "c"


def test_a_batch_of_500_is_answered_in_order_and_501_refused(service):
    items = [predict_request(f"q{number}", mean_ms=float(number)) for number in range(500)]
    answered = service.post("/api/v1/predict/batch", {"items": items})
    assert [item["predicted_ms"] for item in answered.json()["items"]] == list(range(500))

    refused = service.post("/api/v1/predict/batch", {"items": [*items, items[0]]})
    assert refused.status_code == 400
    assert refused.json()["field"] == "items"


def test_the_model_call_describes_the_baseline(service):
    answer = service.get("/api/v1/model").json()
    assert answer == {
        "model_version": "baseline", "feature_names": list(FEATURE_NAMES), "metrics": {},
        "trained_at": None, "source": "baseline",
    }


def test_train_queues_a_job_whose_status_is_reported_until_it_ends(service):
    accepted = service.post("/api/v1/train", {"lookback_days": 1})
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    assert accepted.json() == {"job_id": job_id, "status": "queued"}

    def ended():
        """the job is done or failed"""
        job = service.get(f"/api/v1/train/{job_id}").json()
        return job if job["status"] in ("done", "failed") else None

    job = until(ended, seconds=60)
    assert set(job) == {
        "job_id", "status", "model_version", "accepted", "metrics", "reason", "error",
    }
    assert job["model_version"] is None  # no history, no model
    assert service.model_version() == "baseline"


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_an_unknown_job_is_a_json_404(service, job_id):
    response = service.get(f"/api/v1/train/{job_id}")
    assert response.status_code == 404
    assert job_id in response.json()["error"]


def raw(value):
    return json.dumps(value).encode()


FULL = features(mean_ms=1.0)
BAD_INPUTS = [
    # (path, body bytes, content type, the field named)
    ("/api/v1/predict", raw({"features": FULL}), None, "fingerprint"),
    ("/api/v1/predict", raw({"fingerprint": 7, "features": FULL}), None, "fingerprint"),
    ("/api/v1/predict", raw({"fingerprint": "", "features": FULL}), None, "fingerprint"),
    ("/api/v1/predict", raw({"fingerprint": "x" * 129, "features": FULL}), None, "fingerprint"),
    ("/api/v1/predict", raw({"fingerprint": "a"}), None, "features"),
    ("/api/v1/predict", raw({"fingerprint": "a", "features": [1]}), None, "features"),
    ("/api/v1/predict", raw({"fingerprint": "a", "features": {**FULL, "bogus": 1}}), None,
     "features.bogus"),
    ("/api/v1/predict", raw({"fingerprint": "a", "features": {"mean_ms": 1}}), None,
     f"features.{FEATURE_NAMES[0]}"),
    ("/api/v1/predict", raw(predict_request(mean_ms="1")), None, "features.mean_ms"),
    ("/api/v1/predict", raw(predict_request(mean_ms=True)), None, "features.mean_ms"),
    ("/api/v1/predict", raw(predict_request(mean_ms=None)), None, "features.mean_ms"),
    ("/api/v1/predict", raw(predict_request(mean_ms=-0.5)), None, "features.mean_ms"),
    ("/api/v1/predict", raw(predict_request(stddev_ms=1e13)), None, "features.stddev_ms"),
    ("/api/v1/predict", raw(predict_request(mean_ms=10**400)), None, "features.mean_ms"),
    ("/api/v1/predict", raw(predict_request(mean_ms=1)).replace(b"1", b"1e999", 1), None,
     "features.mean_ms"),  # parses as infinity
    ("/api/v1/predict", raw(predict_request(mean_ms=1.5)).replace(b"1.5", b"NaN"), None, "body"),
    ("/api/v1/predict", raw(predict_request(mean_ms=1.5)).replace(b"1.5", b"Infinity"), None,
     "body"),
    ("/api/v1/predict", raw(predict_request(scenario="future")), None, "scenario"),
    ("/api/v1/predict", raw({**predict_request(), "extra": 1}), None, "extra"),
    ("/api/v1/predict", raw([predict_request()]), None, "body"),
    ("/api/v1/predict", b'{"fingerprint": "a", ', None, "body"),
    ("/api/v1/predict", b"", None, "body"),
    ("/api/v1/predict", b'{"fingerprint": "\xff"}', None, "body"),
    ("/api/v1/predict", b"[" * 100_000, None, "body"),
    ("/api/v1/predict", raw(predict_request()), "text/plain", "Content-Type"),
    ("/api/v1/predict", raw(predict_request()), "application/x-www-form-urlencoded",
     "Content-Type"),
    ("/api/v1/predict/batch", raw({}), None, "items"),
    ("/api/v1/predict/batch", raw({"items": {"0": predict_request()}}), None, "items"),
    ("/api/v1/predict/batch", raw({"items": [], "more": []}), None, "more"),
    ("/api/v1/predict/batch", raw("items"), None, "body"),
    ("/api/v1/train", raw({}), None, "lookback_days"),
    ("/api/v1/train", raw({"lookback_days": 0}), None, "lookback_days"),
    ("/api/v1/train", raw({"lookback_days": -3}), None, "lookback_days"),
    ("/api/v1/train", raw({"lookback_days": 1.5}), None, "lookback_days"),
    ("/api/v1/train", raw({"lookback_days": "7"}), None, "lookback_days"),
    ("/api/v1/train", raw({"lookback_days": True}), None, "lookback_days"),
    ("/api/v1/train", raw({"lookback_days": 3651}), None, "lookback_days"),
    ("/api/v1/train", raw({"lookback_days": 7, "model": "x"}), None, "model"),
    ("/api/v1/train", b"7", None, "body"),
]


@pytest.mark.parametrize("path, body, content_type, field", BAD_INPUTS)
def test_a_bad_input_is_a_400_naming_its_field(service, path, body, content_type, field):
    headers = {"Content-Type": content_type or "application/json"}
    response = service.post(path, data=body, headers=headers)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == field
    assert answer["error"].startswith(f"{field}: ")


def test_a_body_without_a_length_is_refused_rather_than_read_as_empty(service):
    chunks = iter([b'{"lookback_days": ', b"7}"])  # requests sends it chunked
    headers = {"Content-Type": "application/json"}
    response = service.post("/api/v1/train", data=chunks, headers=headers)
    assert response.status_code == 400
    assert response.json()["field"] == "Content-Length"


def test_a_body_over_1_mb_is_refused_before_it_is_sent(service):
    """The answer comes from the headers: the client has sent 1 byte of its 5 MB body."""
    host, port = service.url[len("http://"):].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            b"POST /api/v1/predict/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{"
        )
        answer = b""
        while received := client.recv(65536):  # until the service closes: Connection: close
            answer += received
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b'"field": "body"' in body and b"over 1 MB" in body


def test_a_body_of_1_mb_is_read_and_one_byte_more_is_refused(service):
    batch = raw({"items": [predict_request(mean_ms=1.0)] * 500})
    headers = {"Content-Type": "application/json"}

    def padded(size):
        """the batch, with blanks before its last brace up to `size` bytes"""
        return batch[:-1] + b" " * (size - len(batch)) + b"}"

    read = service.post("/api/v1/predict/batch", data=padded(1024 * 1024), headers=headers)
    assert read.status_code == 200 and len(read.json()["items"]) == 500
    refused = service.post("/api/v1/predict/batch", data=padded(1024 * 1024 + 1), headers=headers)
    assert refused.status_code == 400 and refused.json()["field"] == "body"


@pytest.mark.parametrize(
    "path", ["/nothing", "/api/v1/", "/api/v2/predict", "/health/", "/api/v1/predict/batch/x"]
)
def test_an_unknown_path_is_a_json_404(service, path):
    for response in (service.get(path), service.post(path, {})):
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/json"
        assert path in response.json()["error"]


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "/api/v1/predict", "POST"),
        ("PUT", "/api/v1/predict/batch", "POST"),
        ("DELETE", "/health", "GET"),
        ("POST", "/api/v1/model", "GET"),
        ("PATCH", f"/api/v1/train/{uuid.uuid4()}", "GET"),
        ("HEAD", "/api/v1/train", "POST"),
        ("OPTIONS", "/api/v1/openapi.json", "GET"),
    ],
)
def test_another_method_is_a_json_405_saying_which_is_allowed(service, method, path, allowed):
    response = requests.request(method, service.url + path, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == allowed
    if method != "HEAD":
        assert method in response.json()["error"]


def test_the_request_id_is_echoed_and_logged_with_the_request(service):
    sent = service.post("/api/v1/predict", predict_request(), headers={"X-Request-ID": "req-42"})
    made = service.get("/health", headers={"X-Request-ID": "not valid: spaces"})

    assert sent.headers["X-Request-ID"] == "req-42"
    generated = made.headers["X-Request-ID"]
    assert len(generated) == 32 and generated != "not valid: spaces"
    until(lambda: "[req-42] POST /api/v1/predict 200" in service.log())
    until(lambda: f"[{generated}] GET /health 200" in service.log())


def test_the_openapi_document_describes_every_call_of_the_contract(service):
    document = service.get("/api/v1/openapi.json").json()

    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == CONTRACT_PATHS
    schemas = document["components"]["schemas"]
    assert schemas["Features"]["required"] == list(FEATURE_NAMES)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method != "parameters":
                assert any(status.startswith("2") for status in operation["responses"]), path
    assert schemas["BatchRequest"]["properties"]["items"]["maxItems"] == 500


def test_a_fuzzer_finds_no_server_error_and_no_answer_off_the_document(service, tmp_path):
    """schemathesis (all its phases and checks: server errors, status codes, content types,
    response schemas, negative data rejected, positive data accepted, unsupported methods)
    over every operation, bounded to a few dozen cases each."""
    command = [
        Path(sys.executable).with_name("schemathesis"), "run",
        f"{service.url}/api/v1/openapi.json", "--checks", "all", "--max-examples", "30",
        "--workers", "2", "--request-timeout", "10", "--generation-database", "none",
        "--no-color",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "7 selected / 7 total" in run.stdout
    assert not re.search(r" 500 [0-9.]+ ms$", service.log(), re.MULTILINE)


def test_the_web_app_loads_no_ml_library_for_the_service_s_tables():
    """mlservice is in the web app's INSTALLED_APPS (its migrations); numpy and scikit-learn
    stay out of the web app's processes, and of the command that starts the service."""
    probe = (
        "import sys, django; django.setup();"
        "from django.core.management import load_command_class;"
        "load_command_class('mlservice', 'mlservice');"
        "load_command_class('mlservice', 'mlservice_runner');"
        "print(sorted({'numpy', 'sklearn', 'scipy'} & set(sys.modules)))"
    )
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "pganalytics.settings"}
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=environment, capture_output=True,
        text=True, timeout=60, check=True,
    )
    assert run.stdout.strip() == "[]"
