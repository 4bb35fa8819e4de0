"""bench_history on a small scale: it generates a history in its own scratch database,
answers from it, checks the rollups against the raw intervals, and leaves nothing behind."""

import io
import json

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from pganalytics.models import MonitoredDatabase
from pganalytics.targets import MAINTENANCE_DATABASE, local_dsn


@pytest.mark.django_db(transaction=True)
def test_bench_history_measures_a_generated_history_in_a_scratch_database():
    out = io.StringIO()
    call_command(
        "bench_history", "--statements=40", "--days=3", "--stored-hours=1", "--repeat=1",
        "--json", stdout=out,
    )

    figures = json.loads(out.getvalue())
    assert figures["rollup_totals_equal"] is True
    assert figures["top_30d_vs_1h"] > 0 and figures["bytes_per_statement_day"] > 0
    assert figures["rows"]["daily"] >= 40 * 3 and figures["rows"]["hourly"] > 0
    assert set(figures["seconds"]) == {"1h", "24h", "7d", "30d", "history_30d"}
    assert connection.settings_dict["NAME"].startswith("test_")  # back on the test database
    assert not MonitoredDatabase.objects.exists()  # nothing generated here
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE)) as maintenance:
        scratch = f"{connection.settings_dict['NAME']}_bench_history"
        assert not maintenance.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [scratch]
        ).fetchone()
