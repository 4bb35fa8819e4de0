"""`manage.py mlservice --bind 127.0.0.1:8081 [--workers N]`: the ML service.

Two child processes under mlservice.settings: gunicorn (mlservice.gunicorn_conf: keep-alive)
serving the v1 contract, and the training-job runner (`manage.py mlservice_runner`), apart from
the workers so that a job outlives the worker that accepted it and training takes no worker's
time. A runner that dies is started again (the job it held is marked failed once its heartbeat
is stale); SIGTERM or Ctrl-C stops both; the command ends when gunicorn does, with its status.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mlservice.management.commands.mlservice_runner import stop_on_sigterm, stopping

ROOT = Path(__file__).resolve().parents[3]  # the project: manage.py and the packages
RESTART_DELAY_SECONDS = 1.0  # before a runner that died is started again
STOP_TIMEOUT_SECONDS = 35  # gunicorn's graceful_timeout (30 s) and a little
POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Serve the ML service (gunicorn) and run its training jobs, until SIGTERM or Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8081", help="host:port to serve on")
        parser.add_argument(
            "--workers", type=int, default=settings.ML_SERVICE_WORKERS,
            help="gunicorn worker processes (default: ML_SERVICE_WORKERS)",
        )

    def handle(self, *args, bind, workers, **options):
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "mlservice.settings"}
        server_command = [
            sys.executable, "-m", "gunicorn", "--config", "python:mlservice.gunicorn_conf",
            "--bind", bind, "--workers", str(workers),
        ]
        runner_command = [sys.executable, str(ROOT / "manage.py"), "mlservice_runner"]
        stop_on_sigterm()
        children = []
        try:
            server = start(server_command, environment, children)
            runner = start(runner_command, environment, children)
            while server.poll() is None:
                if runner.poll() is not None:
                    code = runner.returncode
                    self.stderr.write(f"mlservice: the runner exited ({code}); starting another")
                    time.sleep(RESTART_DELAY_SECONDS)
                    runner = start(runner_command, environment, children)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            stopping()
            return
        finally:
            stop(children)
        if server.returncode:
            raise CommandError(f"gunicorn exited with status {server.returncode}")


def start(command, environment, children):
    child = subprocess.Popen(command, cwd=ROOT, env=environment)
    children.append(child)
    return child


def stop(children):
    """SIGTERM to the children still running, SIGKILL to any still there after the timeout."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
