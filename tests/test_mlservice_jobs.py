"""Model versions and training jobs across real processes: a new version reaches every
service process within seconds and survives a restart, a corrupt one is refused, a job is
claimed and trained by a runner (the real mlservice.training on a generated history) and its
version served by another process, and a job whose runner is killed is marked failed."""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from mlservice import store
from mlservice.models import ModelVersion, TrainingJob
from pganalytics.analytics.collector import COUNTERS, Reading
from pganalytics.analytics.collector import store as store_reading
from pganalytics.models import MonitoredDatabase
from pganalytics.targets import local_dsn
from tests.mlservice_predictor import ScalingPredictor
from tests.mlservice_process import Service, predict_request
from tests.test_workers import until

METRICS = {"mae_ms": 1.0, "baseline_mae_ms": 2.0, "coverage_80": 0.8, "samples": 300}


@pytest.fixture
def services(transactional_db, tmp_path):
    """`services(n)`: n services of one worker each on the test database (which their
    processes read: the test's writes are committed); all stopped after the test."""
    started = []

    def start(count=1):
        for _ in range(count):
            started.append(Service(tmp_path / f"service{len(started)}.log", workers=1))
        return started[-count:]

    yield start
    for service in started:
        service.stop()


def serving(services, version):
    def agree():
        """every process serves the version"""
        return all(service.model_version() == version for service in services)

    return agree


def test_a_new_version_is_served_by_every_process_within_seconds_and_kept_on_restart(services):
    first, second = services(2)
    assert first.model_version() == second.model_version() == "baseline"

    made = time.monotonic()
    version = store.save(ScalingPredictor(2.0, METRICS), METRICS, current=True).version
    until(serving([first, second], version), seconds=10)
    assert time.monotonic() - made < 5  # ML_MODEL_CHECK_INTERVAL is 300 ms here

    answer = second.post("/api/v1/predict", predict_request(mean_ms=3.0)).json()
    assert (answer["source"], answer["model_version"]) == ("model", version)
    assert answer["predicted_ms"] == pytest.approx(6.0)
    assert answer["interval_ms"] == pytest.approx([5.4, 6.6])
    model = first.get("/api/v1/model").json()
    assert (model["metrics"], model["source"]) == (METRICS, "model")
    assert first.get("/health").json() == {"status": "ok", "model_version": version}

    first.stop()
    (restarted,) = services()
    assert restarted.model_version() == version  # its first answer: loaded when it started


def test_a_version_whose_bytes_do_not_match_its_checksum_is_not_served(services):
    (running,) = services()
    good = store.save(ScalingPredictor(2.0, METRICS), METRICS, current=True).version
    until(serving([running], good))

    corrupt = store.save(ScalingPredictor(3.0, METRICS), METRICS, current=True)
    ModelVersion.objects.filter(pk=corrupt.pk).update(pickled=b"not the pickle stored")
    until(lambda: "do not match its checksum" in running.log())
    assert running.model_version() == good  # the one it had keeps answering

    (fresh,) = services()  # nothing loaded before: nothing answers
    refused = fresh.get("/health")
    assert refused.status_code == 503
    assert corrupt.version in refused.json()["error"]
    assert fresh.post("/api/v1/predict", predict_request(mean_ms=1.0)).status_code == 503


def generated_history(intervals, statements=4, minutes=5):
    """`intervals` snapshots, `minutes` apart up to now, of `statements` statements whose
    mean latency alternates between 1 and 10 ms (× their number) from one interval to the
    next: the last value is always wrong, the median of the last 8 half as wrong, and the
    next latency follows from this one's (the model's chance)."""
    database = MonitoredDatabase.objects.create(name="alternating", dsn="host=127.0.0.1 port=1")
    texts = [f"SELECT c{number} FROM t WHERE id = $1" for number in range(statements)]
    counters = {text: dict.fromkeys(COUNTERS, 0) for text in texts}
    start = timezone.now() - timedelta(minutes=minutes * intervals)
    for step in range(intervals):
        for number, text in enumerate(texts):
            latency = (number + 1) * (10.0 if step % 2 else 1.0)
            total = counters[text]
            total["calls"] += 10
            total["total_exec_time"] += 10 * latency
            total["mean_exec_time"] = total["total_exec_time"] / total["calls"]
            total["rows"] += 10
            total["shared_blks_hit"] += 10
        rows = [(text, 10, number, *(counters[text][name] for name in COUNTERS))
                for number, text in enumerate(texts)]
        moment = start + timedelta(minutes=minutes * step)
        store_reading(database, Reading(moment, start, rows), started=0.0)


def ended(service, job_id):
    def job():
        """the job is done or failed"""
        found = service.get(f"/api/v1/train/{job_id}").json()
        return found if found["status"] in ("done", "failed") else None

    return job


def test_a_training_job_makes_a_version_that_another_process_serves(services):
    generated_history(intervals=90)
    first, second = services(2)

    accepted = first.post("/api/v1/train", {"lookback_days": 2})
    assert accepted.status_code == 202
    job = until(ended(first, accepted.json()["job_id"]), seconds=120)

    assert job["status"] == "done", job["error"]
    assert job["accepted"] is True and job["reason"].startswith("accepted"), job
    assert job["metrics"]["mae_ms"] < job["metrics"]["baseline_mae_ms"]
    assert job["metrics"]["samples"] >= 200
    until(serving([first, second], job["model_version"]), seconds=10)
    after_a_quick_one = predict_request(  # as features.query_features gives it
        mean_ms=1.0, calls_per_minute=2.0, has_stats=1.0, has_history=1.0, recent_intervals=8.0,
        recent_median_ms=5.5, recent_spread_ms=4.5, recent_mean_ms=5.5, previous_mean_ms=10.0,
        calls_trend=1.0,
    )
    answer = second.post("/api/v1/predict", after_a_quick_one).json()
    assert answer["source"] == "model"
    assert answer["predicted_ms"] > 5  # after a 1 ms interval comes a 10 ms one
    stored = ModelVersion.objects.get(version=job["model_version"])
    assert stored.current and stored.jobs.get().pk == TrainingJob.objects.get().pk


def test_a_job_with_too_little_history_is_done_not_accepted_and_the_baseline_stays(services):
    generated_history(intervals=10)
    (running,) = services()

    job_id = running.post("/api/v1/train", {"lookback_days": 1}).json()["job_id"]
    job = until(ended(running, job_id), seconds=60)

    outcome = (job["status"], job["accepted"], job["model_version"])
    assert outcome == ("done", False, None), job["error"]
    assert "not enough history" in job["reason"]
    assert running.model_version() == "baseline"


def test_requests_to_train_while_a_job_waits_are_answered_with_that_job(services):
    """A client cannot fill the queue: one job runs (held on the history's lock), one waits,
    and every later request gets the waiting one, asked to look back the longest."""
    (running,) = services()
    with psycopg.connect(local_dsn(connection.settings_dict["NAME"])) as blocker:
        blocker.execute("LOCK TABLE pganalytics_querystat IN ACCESS EXCLUSIVE MODE")
        first = running.post("/api/v1/train", {"lookback_days": 1}).json()["job_id"]
        # Claimed: running, or already failed if a loaded machine delayed its heartbeat (its
        # runner waits on the lock all the same).
        until(lambda: running.get(f"/api/v1/train/{first}").json()["status"] != "queued")

        answers = [running.post("/api/v1/train", {"lookback_days": days})
                   for days in (2, 30, 7, 1)]
        blocker.rollback()

    assert {answer.status_code for answer in answers} == {202}
    waiting = {answer.json()["job_id"] for answer in answers}
    assert len(waiting) == 1 and first not in waiting
    assert {answer.json()["status"] for answer in answers} == {"queued"}
    assert TrainingJob.objects.count() == 2
    (waiting_id,) = waiting
    assert TrainingJob.objects.get(pk=waiting_id).lookback_days == 30
    until(ended(running, waiting_id), seconds=60)  # and it runs in its turn


def children(pid):
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_job_outlives_the_worker_that_accepted_it(services):
    """The job is a row: the gunicorn worker that queued it is killed (gunicorn starts
    another) before any runner takes it, and it still runs."""
    (running,) = services()
    with psycopg.connect(local_dsn(connection.settings_dict["NAME"])) as blocker:
        blocker.execute("LOCK TABLE pganalytics_querystat IN ACCESS EXCLUSIVE MODE")
        busy = running.post("/api/v1/train", {"lookback_days": 1}).json()["job_id"]
        until(lambda: running.get(f"/api/v1/train/{busy}").json()["status"] == "running")
        waiting = running.post("/api/v1/train", {"lookback_days": 1}).json()["job_id"]
        (gunicorn,) = [pid for pid in children(running.process.pid) if children(pid)]
        (worker,) = children(gunicorn)  # the runner has none
        os.kill(worker, signal.SIGKILL)
        until(lambda: children(gunicorn) not in ([], [worker]))  # a new worker
        blocker.rollback()

    job = until(ended(running, waiting), seconds=60)
    assert job["status"] == "done", job["error"]


def test_a_job_whose_runner_is_killed_is_marked_failed_and_the_next_runs(services):
    (running,) = services()
    with psycopg.connect(local_dsn(connection.settings_dict["NAME"])) as blocker:
        # Training reads the history first: it waits here, its runner seen running.
        blocker.execute("LOCK TABLE pganalytics_querystat IN ACCESS EXCLUSIVE MODE")
        job_id = running.post("/api/v1/train", {"lookback_days": 1}).json()["job_id"]
        until(lambda: running.get(f"/api/v1/train/{job_id}").json()["status"] == "running")
        runner = TrainingJob.objects.get(pk=job_id).runner
        os.kill(int(runner.rsplit(":", 1)[1]), signal.SIGKILL)
        blocker.rollback()

    job = until(ended(running, job_id), seconds=30)
    assert job["status"] == "failed"
    assert job["error"].startswith(f"its runner {runner} sent no heartbeat")

    next_id = running.post("/api/v1/train", {"lookback_days": 1}).json()["job_id"]
    until(ended(running, next_id), seconds=60)  # a new runner took it
    assert TrainingJob.objects.get(pk=next_id).runner != runner
