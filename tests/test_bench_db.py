"""bench_db: the three connection modes served by real gunicorn workers, side by side; its
one-query view is reachable only in the benchmark's own servers."""

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client

from tests.conftest import child_environment


def test_bench_db_measures_each_mode_with_real_workers(db, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", child_environment()["DATABASE_URL"])
    monkeypatch.setenv("MAX_IDLE_DATABASE_CONNS", "1")
    out = io.StringIO()
    call_command(
        "bench_db", "--json", "--workers=1", "--concurrency=3", "--requests=30", "--rounds=1",
        stdout=out,
    )
    report = json.loads(out.getvalue())

    modes = {row["mode"]: row for row in report["modes"]}
    assert set(modes) == {"new", "persistent", "pooled", "pooled_15"}
    assert report["errors"] == 0
    assert all(row["requests"] == 30 and row["p99_ms"] >= row["p50_ms"] > 0
               for row in modes.values())
    assert report["pooled_vs_new_connection"] == modes["pooled"]["vs_new_connection"] > 0
    assert report["persistent_vs_new_connection"] == modes["persistent"]["vs_new_connection"]
    # what each mode keeps open on the server once the load is over, with one worker
    assert modes["new"]["connections_held"] == 0
    assert modes["persistent"]["connections_held"] == 1
    assert 1 <= modes["pooled"]["connections_held"] < modes["pooled_15"]["connections_held"]


@pytest.mark.django_db
def test_the_one_query_view_is_not_served_by_the_app():
    assert Client().get("/one-query").status_code == 404
