"""bench_model on a small scale: it generates a history in its own scratch database, trains
on it, reports the model beside both baselines and the prediction timings, and leaves nothing
behind."""

import io
import json

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from pganalytics.models import MonitoredDatabase
from pganalytics.targets import MAINTENANCE_DATABASE, local_dsn


@pytest.mark.django_db(transaction=True)
def test_bench_model_trains_on_a_generated_history_in_a_scratch_database():
    out = io.StringIO()
    call_command(
        "bench_model", "--databases=1", "--statements=12", "--days=1", "--period=300",
        "--repeat=3", "--json", stdout=out,
    )

    figures = json.loads(out.getvalue())
    assert figures["mae_vs_best_baseline"] > 0 and 0 < figures["coverage_80"] <= 1
    assert 0 < figures["predict_ms"] < figures["batch500_ms"]
    assert figures["held_out"] > 500 and figures["snapshots"] == 288
    assert figures["mae_ms"] / figures["baseline_mae_ms"] == figures["mae_vs_best_baseline"]
    assert 0 < figures["noise_floor_mae_ms"] < figures["last_value_mae_ms"]
    assert figures["noise_floor_mae_ms"] < figures["current_level_mae_ms"]
    assert figures["regressed_statements"] == 4  # the default --regressions
    assert 0 < figures["optimized_vs_current"] and 0 < figures["measured_before_vs_regressed"] < 1
    assert connection.settings_dict["NAME"].startswith("test_")  # back on the test database
    assert not MonitoredDatabase.objects.exists()  # nothing generated here
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE)) as maintenance:
        scratch = f"{connection.settings_dict['NAME']}_bench_model"
        assert not maintenance.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [scratch]
        ).fetchone()
