"""Training jobs, rows in the database. POST /api/v1/train queues one (or joins the one
waiting); a runner process (`manage.py mlservice_runner`, started beside gunicorn by
`manage.py mlservice`) claims the oldest queued one with FOR UPDATE SKIP LOCKED, so that
any number of runners take each job once, and a job outlives the worker that accepted it.

While a job trains, a thread of its runner refreshes the job's heartbeat (the database's clock,
so runners on other hosts compare alike). A running job whose heartbeat is older than
ML_JOB_HEARTBEAT_TIMEOUT is marked failed by the next runner or status read that sees it: its
runner died or hung. A runner that finishes a job taken from it so drops its result.
"""

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import F, Value
from django.db.models.functions import Concat, Greatest, Now
from django.utils import timezone

from mlservice import store
from mlservice.models import TrainingJob

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # a runner's wait between two looks at the queue when it is empty
BEATS_PER_TIMEOUT = 4  # heartbeats sent within one ML_JOB_HEARTBEAT_TIMEOUT


def enqueue(lookback_days):
    """The queued job, asked to look back at least `lookback_days`: the one already waiting if
    there is one (a job trains on the history there is when a runner takes it, so one more
    would learn the same), else a new one. A client cannot fill the queue: at most one job is
    queued (a partial unique index), beside those running."""
    while True:  # until the update finds a waiting job or the insert is the only one
        with transaction.atomic():
            waiting = TrainingJob.objects.filter(status=TrainingJob.QUEUED)
            longest = Greatest("lookback_days", Value(lookback_days))
            if waiting.update(lookback_days=longest):  # locked: no runner claims it meanwhile
                return waiting.get()
            try:
                with transaction.atomic():
                    return TrainingJob.objects.create(lookback_days=lookback_days)
            except IntegrityError:  # another request queued one since: join it
                continue


def runner_name():
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(runner):
    """The oldest queued job, now running as `runner`'s; None when none is queued (or every
    queued one is being claimed by another runner right now)."""
    with transaction.atomic():
        queued = TrainingJob.objects.select_for_update(skip_locked=True).filter(
            status=TrainingJob.QUEUED
        )
        job = queued.order_by("created_at").first()
        if job is None:
            return None
        TrainingJob.objects.filter(pk=job.pk).update(
            status=TrainingJob.RUNNING, runner=runner, started_at=Now(), heartbeat_at=Now()
        )
    job.refresh_from_db()
    return job


def reap():
    """Mark failed every running job whose heartbeat stopped; how many."""
    timeout = settings.ML_JOB_HEARTBEAT_TIMEOUT
    error = f" sent no heartbeat for {timeout:g} s: it died or hung; the job did not finish"
    return TrainingJob.objects.filter(
        status=TrainingJob.RUNNING, heartbeat_at__lt=Now() - timedelta(seconds=timeout)
    ).update(
        status=TrainingJob.FAILED,
        finished_at=Now(),
        error=Concat(Value("its runner "), F("runner"), Value(error)),
    )


def serve(runner):
    """Claim and run jobs, one at a time, until interrupted (KeyboardInterrupt)."""
    while True:
        close_old_connections()
        try:
            reap()
            job = claim(runner)
        except DatabaseError as error:
            log.warning("the database does not answer: %s", error)
            job = None
        if job is None:
            time.sleep(POLL_SECONDS)
        else:
            run(job, runner)


def run(job, runner):
    """Train for `job`, store the version it made (current if it beat the baselines), end it."""
    log.info("training job %s: %d days of history", job.pk, job.lookback_days)
    try:
        with heartbeat(job.pk, runner):  # importing scikit-learn alone can take seconds
            from mlservice.training import train  # the runner's alone: workers never train

            outcome = train(job.lookback_days)
    except Exception as error:
        log.exception("training job %s failed", job.pk)
        fail(job.pk, runner, f"{type(error).__name__}: {error}")
        return
    except BaseException:  # SIGTERM or Ctrl-C: the job ends with its runner
        fail(job.pk, runner, "its runner was stopped while it trained")
        raise
    finish(job.pk, runner, outcome)


def finish(job_id, runner, outcome):
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(
            pk=job_id, status=TrainingJob.RUNNING, runner=runner
        ).first()
        if job is None:
            log.warning("training job %s was marked failed meanwhile: result dropped", job_id)
            return
        accepted = bool(outcome.accepted and outcome.predictor is not None)
        if outcome.predictor is not None:
            job.model_version = store.save(outcome.predictor, outcome.metrics, current=accepted)
        job.status, job.finished_at, job.accepted = TrainingJob.DONE, timezone.now(), accepted
        job.metrics, job.reason = store.plain(outcome.metrics), outcome.reason
        job.save()
    log.info("training job %s done: %s", job_id, outcome.reason)


def fail(job_id, runner, error):
    TrainingJob.objects.filter(pk=job_id, status=TrainingJob.RUNNING, runner=runner).update(
        status=TrainingJob.FAILED, finished_at=Now(), error=error
    )


@contextmanager
def heartbeat(job_id, runner):
    """Refresh the job's heartbeat from a thread while the block runs."""
    stop = threading.Event()
    thread = threading.Thread(target=beat, args=(job_id, runner, stop), name="heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def beat(job_id, runner, stop):
    interval = settings.ML_JOB_HEARTBEAT_TIMEOUT / BEATS_PER_TIMEOUT
    try:
        while not stop.wait(interval):
            try:
                TrainingJob.objects.filter(
                    pk=job_id, status=TrainingJob.RUNNING, runner=runner
                ).update(heartbeat_at=Now())
            except DatabaseError as error:  # a blip: the next beat may pass
                log.warning("training job %s: heartbeat not sent: %s", job_id, error)
    finally:
        connection.close()  # this thread's connection
