"""`manage.py bench_collect [--statements 5000] [--runs 5]`: how fast a snapshot is stored.

A scratch database on the app's server gets N distinct statement shapes (so that
pg_stat_statements holds N rows for it and pglast N fingerprints), then collect() is timed
several times against it, each time for real: read, fingerprint, store, commit. Every
statement runs again before each collection, so every one moved and is stored: the most a
snapshot stores. The first run also creates the Query rows; the later ones are the steady
state of a collector.
The scratch database's statistics are reset at the end: pg_stat_statements slots are
shared by every database on the server.
"""

import statistics
import time

import psycopg
from django.core.management.base import BaseCommand, CommandError

from pganalytics.analytics.collector import collect
from pganalytics.models import MonitoredDatabase
from pganalytics.targets import ensure_database, local_dsn, reset_statements

BENCH_NAME = "bench-collect"


def statement(number, width):
    """The `number`-th distinct shape: its bits choose + or - between `width` + 1 constants."""
    operators = ("+" if number >> bit & 1 else "-" for bit in range(width))
    expression = "1" + "".join(f" {op} {bit + 2}" for bit, op in enumerate(operators))
    return f"SELECT id, label FROM bench_items WHERE id = {expression}"


def generate_workload(connection, count):
    """Reset the connection's database's statistics, then run_workload()."""
    connection.execute("CREATE TABLE IF NOT EXISTS bench_items (id int PRIMARY KEY, label text)")
    connection.execute(
        "INSERT INTO bench_items SELECT i, 'item ' || i FROM generate_series(1, 1000) i"
        " ON CONFLICT DO NOTHING"
    )
    reset_statements(connection)
    run_workload(connection, count)


def run_workload(connection, count):
    """Run `count` distinct statements once each in the connection's database."""
    width = max(1, (count - 1).bit_length())
    with connection.pipeline():
        for number in range(count):
            connection.execute(statement(number, width))


class Command(BaseCommand):
    help = "Time collect() on a generated workload of N distinct statements."

    def add_arguments(self, parser):
        parser.add_argument("--statements", type=int, default=5000, help="distinct statements")
        parser.add_argument("--runs", type=int, default=5, help="timed collections")
        parser.add_argument(
            "--scratch-db", default="pganalytics_bench", help="database for the workload"
        )

    def handle(self, *args, statements, runs, scratch_db, **options):
        if statements < 1 or runs < 1:
            raise CommandError("--statements and --runs must be at least 1")
        ensure_database(scratch_db)
        MonitoredDatabase.objects.filter(name=BENCH_NAME).delete()
        database = MonitoredDatabase.objects.create(name=BENCH_NAME, dsn=local_dsn(scratch_db))
        with psycopg.connect(local_dsn(scratch_db), autocommit=True) as connection:
            generate_workload(connection, statements)
            capacity = int(connection.execute("SHOW pg_stat_statements.max").fetchone()[0])
            self.stdout.write(
                f"bench_collect: {statements} distinct statements run in {scratch_db} "
                f"(pg_stat_statements.max = {capacity}, shared by every database on the server)"
            )
            try:
                seconds = []
                for run in range(1, runs + 1):
                    if run > 1:
                        run_workload(connection, statements)  # every statement moves again
                    seconds.append(self.timed_run(database, run))
            finally:
                database.delete()
                reset_statements(connection)  # give the server's statement slots back
        steady = seconds[1:] or seconds
        self.stdout.write(
            f"steady state (runs {'2' if runs > 1 else '1'}-{runs}): "
            f"median {statistics.median(steady):.3f} s, best {min(steady):.3f} s"
        )

    def timed_run(self, database, run):
        started = time.perf_counter()
        snapshot = collect(database)
        elapsed = time.perf_counter() - started
        stored = snapshot.stats.count()
        note = " (first snapshot: creates the Query rows)" if run == 1 else ""
        self.stdout.write(
            f"run {run}: {snapshot.statement_count} rows read, {stored} moved and stored in "
            f"{elapsed:.3f} s ({snapshot.statement_count / elapsed:,.0f} rows/s){note}"
        )
        return elapsed
