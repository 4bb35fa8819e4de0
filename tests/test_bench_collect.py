"""bench_collect runs a real workload and real collections, and cleans up after itself."""

import io
import os
import re

import pytest
from django.core.management import call_command

from pganalytics.fingerprint import compute_fingerprint
from pganalytics.management.commands.bench_collect import statement
from pganalytics.models import MonitoredDatabase, Query
from pganalytics.targets import drop_database


def test_every_generated_statement_has_its_own_fingerprint():
    fingerprints = {compute_fingerprint(statement(number, 7)).fingerprint for number in range(128)}

    assert len(fingerprints) == 128


@pytest.mark.django_db(transaction=True)
def test_bench_collect_times_collections_of_the_generated_statements():
    scratch = f"pganalytics_bench_{os.environ.get('PYTEST_DB_SUFFIX', 'main')}_{os.getpid()}"
    out = io.StringIO()
    try:
        call_command(
            "bench_collect", "--statements=40", "--runs=2", f"--scratch-db={scratch}", stdout=out
        )
    finally:
        drop_database(scratch)

    runs = re.findall(
        r"^run \d: (\d+) rows read, (\d+) moved and stored in [\d.]+ s", out.getvalue(), re.M
    )
    assert len(runs) == 2
    assert all(int(rows) >= 40 and int(stored) >= 40 for rows, stored in runs)
    assert "steady state (runs 2-2): median" in out.getvalue()
    assert not MonitoredDatabase.objects.exists() and not Query.objects.exists()
