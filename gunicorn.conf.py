"""gunicorn settings for serving with several worker processes:

    PROMETHEUS_MULTIPROC_DIR=/run/pganalytics-metrics CACHE_L2_URL=redis://127.0.0.1:6379/1 \
        .venv/bin/gunicorn -c gunicorn.conf.py --workers 4 --bind 127.0.0.1:8000

In prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before gunicorn
starts) every process writes its values to files there: the directory is emptied when
gunicorn starts, so no earlier run's counts are added in, and a worker's live gauges are
dropped when it exits, so `cache_entries` sums the workers that are alive. Once the workers
are known, the master warns when they (and the ML service) may open more database connections
than the server accepts (pganalytics.connection_budget).
"""

import os
from pathlib import Path

wsgi_app = "pganalytics.wsgi:application"


def on_starting(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # GUNICORN_PID: a master re-executed by USR2, whose predecessor's workers still serve.
    if directory and "GUNICORN_PID" not in os.environ:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for leftover in Path(directory).glob("*.db"):
            leftover.unlink()


def when_ready(server):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pganalytics.settings")
    from pganalytics.connection_budget import check

    message = check(server.cfg.workers, server.cfg.threads)
    if message:
        server.log.warning(message)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
