"""MLClient: the ML service's v1 contract as typed calls, through one pooled, retrying
session and a circuit breaker.

Every call sends `X-Request-ID`: the id of the request being served when the function named
by the setting MLCLIENT_REQUEST_ID (a dotted path) returns one, a fresh id otherwise.
"""

import threading
import time
import uuid
from datetime import datetime, timezone

import requests

from mlclient import metrics
from mlclient.breaker import STATE_NUMBERS, CircuitBreaker
from mlclient.errors import BadRequest, CircuitOpen, MLServiceError, ServiceUnavailable
from mlclient.results import ModelInfo, Prediction, PredictionError, TrainingJob
from mlclient.session import RETRIED_STATUSES, pool_counts, pooled_session, retry_policy

REQUEST_ID_HEADER = "X-Request-ID"
CONNECT_TIMEOUT = 1.0  # seconds: a service on the same network accepts in milliseconds
MAX_BATCH_ITEMS = 500  # the contract's limit per predict/batch call
MAX_ERROR_TEXT = 300


class Tally:
    """What stats() reports besides the breaker: counts and the last error, under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = self.retries = self.failures = 0
        self.last_error = self.last_error_at = None

    def retried(self):
        with self.lock:
            self.retries += 1
        metrics.RETRIES.inc()

    def ended(self, outcome, error=None):
        with self.lock:
            self.calls += 1
            if outcome == "unavailable":
                self.failures += 1
            if error is not None:
                self.last_error = str(error)
                self.last_error_at = time.time()


class MLClient:
    """A client of one ML service. Thread-safe; share one per process (from_settings).

    `predict`, `predict_batch`, `train`, `training_status`, `model_info` and `health` raise
    BadRequest for a 4xx answer (not retried, not a breaker failure), ServiceUnavailable
    when no answer came after the retries, CircuitOpen without trying while the breaker
    is open: all MLServiceError.
    """

    def __init__(self, base_url, *, connect_timeout=CONNECT_TIMEOUT, read_timeout=5.0,
                 pool_size=10, max_retries=3, backoff_initial=0.1, backoff_multiplier=2.0,
                 backoff_max=2.0, failure_threshold=5, reset_timeout=30.0, request_id=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.request_id = request_id  # () -> the incoming request's id or None
        self.tally = Tally()
        self.breaker = CircuitBreaker(failure_threshold, reset_timeout,
                                      on_change=self._breaker_moved)
        retry = retry_policy(max_retries, backoff_initial, backoff_multiplier, backoff_max,
                             on_retry=self.tally.retried)
        self.session = pooled_session(pool_size, retry,
                                      not_idempotent=[f"{self.base_url}/api/v1/train"])

    @classmethod
    def from_settings(cls, **overrides):
        """The process' shared client, built from Django settings (again when they change,
        and in a forked child, which must not share its parent's connections). Keywords
        of MLClient in `overrides` replace the settings' values: each distinct set is
        another shared client, e.g. one that a page can afford to wait for."""
        from mlclient.shared import shared_client

        return shared_client(cls, **overrides)

    def predict(self, fingerprint, features, scenario="current"):
        """The Prediction for one fingerprint's features under `scenario`."""
        body = {"fingerprint": fingerprint, "features": features, "scenario": scenario}
        return Prediction.from_json(self._call("POST", "/api/v1/predict", body))

    def predict_batch(self, items):
        """[Prediction | PredictionError] for [(fingerprint, features, scenario), ...], in
        order: one call per 500 items; an item the service refuses gets a PredictionError."""
        items = list(items)
        results = []
        for start in range(0, len(items), MAX_BATCH_ITEMS):
            chunk = items[start:start + MAX_BATCH_ITEMS]
            body = {"items": [
                {"fingerprint": fingerprint, "features": features, "scenario": scenario}
                for fingerprint, features, scenario in chunk
            ]}
            answers = self._call("POST", "/api/v1/predict/batch", body)["items"]
            for (fingerprint, _, scenario), answer in zip(chunk, answers, strict=True):
                results.append(
                    PredictionError(fingerprint, scenario, answer["error"], answer.get("field"))
                    if "error" in answer else Prediction.from_json(answer)
                )
        return results

    def train(self, lookback_days):
        """Queue a training job on the last `lookback_days` of history (never sent twice)."""
        answer = self._call("POST", "/api/v1/train", {"lookback_days": lookback_days})
        return TrainingJob.from_json(answer)

    def training_status(self, job_id):
        """The job's state. Its URL starts as train's does, so it too is retried only when
        the connection could not be made."""
        return TrainingJob.from_json(self._call("GET", f"/api/v1/train/{job_id}"))

    def model_info(self):
        return ModelInfo.from_json(self._call("GET", "/api/v1/model"))

    def health(self):
        """The service's /health answer: {"status": "ok", "model_version": str or None}."""
        return self._call("GET", "/health")

    def stats(self):
        """A flat dict for the admin panel: breaker, counts, last error, pool connections."""
        with self.tally.lock:
            counts = {
                "calls": self.tally.calls,
                "retries": self.tally.retries,
                "failures": self.tally.failures,
                "last_error": self.tally.last_error,
                "last_error_at": (
                    datetime.fromtimestamp(self.tally.last_error_at, timezone.utc)
                    .strftime("%Y-%m-%d %H:%M:%S UTC")
                    if self.tally.last_error_at is not None else None
                ),
            }
        return {
            "service": self.base_url,
            "breaker_state": self.breaker.state,
            "consecutive_failures": self.breaker.consecutive_failures,
            **counts,
            **pool_counts(self.session),
        }

    def close(self):
        self.session.close()

    def _call(self, method, path, body=None):
        """The decoded JSON answer of one call, through the breaker, counted and timed."""
        started = time.perf_counter()
        try:
            with self.breaker.calling(is_failure):
                answer = self._send(method, path, body)
        except CircuitOpen:
            self.tally.ended("circuit_open")
            metrics.CALLS_BY_OUTCOME["circuit_open"].inc()
            raise
        except MLServiceError as error:
            outcome = "bad_request" if isinstance(error, BadRequest) else "unavailable"
            self._ended(outcome, started, error)
            raise
        self._ended("ok", started)
        return answer

    def _ended(self, outcome, started, error=None):
        self.tally.ended(outcome, error)
        metrics.CALLS_BY_OUTCOME[outcome].inc()
        metrics.LATENCY.observe(time.perf_counter() - started)

    def _send(self, method, path, body):
        where = f"{method} {path}"
        headers = {REQUEST_ID_HEADER: self._outgoing_request_id()}
        try:
            response = self.session.request(
                method, self.base_url + path, json=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as error:
            raise ServiceUnavailable(f"{where}: {short(cause(error))}") from error
        try:
            answer = response.json()
        except ValueError:
            answer = None
        status = response.status_code
        if status < 400 and isinstance(answer, dict):
            return answer
        message = answer.get("error") if isinstance(answer, dict) else None
        message = f"{where}: {status} {message or short(response.text) or response.reason}"
        if status < 400 or status >= 500 or status in RETRIED_STATUSES:
            raise ServiceUnavailable(message)
        field = answer.get("field") if isinstance(answer, dict) else None
        raise BadRequest(message, status=status, field=field)

    def _outgoing_request_id(self):
        incoming = self.request_id() if self.request_id is not None else None
        return incoming or uuid.uuid4().hex

    def _breaker_moved(self, state):
        metrics.BREAKER_STATE.set(STATE_NUMBERS[state])


def is_failure(error):
    """What counts against the breaker: no answer, or an answer saying the service cannot
    answer now (5xx, 429). A refused request (4xx) shows the service is up."""
    return isinstance(error, ServiceUnavailable)


def cause(error):
    """What went wrong under requests' wrapping (urllib3's MaxRetryError names its reason)."""
    wrapped = error.args[0] if error.args else None
    return getattr(wrapped, "reason", None) or error


def short(value):
    text = str(value)
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."
