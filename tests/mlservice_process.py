"""The ML service as the tests run it: `manage.py mlservice` as a real process (gunicorn and
its runner), in its own process group, on a free port, on the test database."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from pganalytics.analytics.features import FEATURE_NAMES
from tests.conftest import child_environment
from tests.test_workers import free_port, until

ROOT = Path(__file__).resolve().parent.parent
# Short enough that a test sees a new version, or a dead runner's job, within seconds.
QUICK = {"ML_MODEL_CHECK_INTERVAL": "300ms", "ML_JOB_HEARTBEAT_TIMEOUT": "2s"}


class Service:
    """`Service(log_path, workers=2)`: started and answering; `stop()` ends the whole group."""

    def __init__(self, log_path, workers=2):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "mlservice", "--bind", self.url[len("http://"):],
                 "--workers", str(workers)],
                cwd=ROOT, env={**child_environment(), **QUICK}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            until(self.answers, seconds=60)
        except BaseException:  # not left running behind a failed test
            self.stop()
            raise

    def answers(self):
        """the service answers /health"""
        try:
            return requests.get(f"{self.url}/health", timeout=5).status_code in (200, 503)
        except requests.RequestException:  # not listening yet, or no worker booted yet
            return False

    def get(self, path, **kwargs):
        return requests.get(self.url + path, timeout=10, **kwargs)

    def post(self, path, body=None, **kwargs):
        return requests.post(self.url + path, json=body, timeout=10, **kwargs)

    def model_version(self):
        return self.get("/api/v1/model").json()["model_version"]

    def log(self):
        return Path(self.log_path).read_text()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def features(**values):
    """A full feature dict: zeros but for `values`."""
    return {**dict.fromkeys(FEATURE_NAMES, 0.0), **values}


def predict_request(fingerprint="f00d", scenario="current", **values):
    return {"fingerprint": fingerprint, "scenario": scenario, "features": features(**values)}
