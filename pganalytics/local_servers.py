"""Servers a benchmark starts on the loopback and stops when done: a Redis of its own and
the app under gunicorn, as an operator runs them (gunicorn.conf.py)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
import requests
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
START_TIMEOUT = 60  # seconds for a started server to answer
STOP_TIMEOUT = 40  # seconds for it to stop on SIGTERM (gunicorn's graceful 30 s and a little)


def free_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(ready, process, what):
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise CommandError(f"{what} did not start")
        time.sleep(0.1)


def stop(process):
    """SIGTERM to the process group, SIGKILL if it is still there after STOP_TIMEOUT."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def own_redis():
    """Yields the URL of a redis-server started for the block alone (empty, not persisted)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise CommandError("redis-server is not installed (scripts/ensure-redis installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers():
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, process, f"redis-server on port {port}")
        yield url
    finally:
        client.close()
        stop(process)


@contextmanager
def gunicorn(workers, environment, app=None, ready_path="/healthz", log=None):
    """Yields the base URL of gunicorn with `workers` sync workers serving `app` (a gunicorn
    app spec; gunicorn.conf.py's by default), the environment variables `environment` added
    to this process's; `ready_path` answers 200 by then. A metrics directory of its own and
    no control socket, so that it leaves any other server alone; what it logs goes to `log`
    (a file) when given."""
    url = f"http://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="pganalytics-serve-") as directory, \
            ExitStack() as files:
        metrics = Path(directory, "metrics")
        metrics.mkdir()
        if log is None:
            log = files.enter_context(tempfile.TemporaryFile("w+"))
        env = {
            **os.environ, "DEBUG": "false", "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            **environment,
        }
        process = subprocess.Popen(
            [GUNICORN, "-c", "gunicorn.conf.py", "--workers", str(workers), "--bind", url[7:],
             "--no-control-socket", *([app] if app else [])],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

        def answers():
            try:
                return requests.get(f"{url}{ready_path}", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            try:
                wait_until(answers, process, f"gunicorn on {url}")
            except CommandError as error:
                stop(process)
                log.seek(0)
                raise CommandError(f"{error}: {log.read()[-2000:]}") from None
            yield url
        finally:
            stop(process)
