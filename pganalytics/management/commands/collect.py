"""`manage.py collect [--database NAME] [--every 60s]`: snapshots of the monitored databases."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from pganalytics.collector import CollectionError, collect_all
from pganalytics.config import parse_period


def duration(text):
    try:
        return parse_period(text)
    except ValueError as error:
        raise CommandError(f"--every {text!r}: {error}")


class Command(BaseCommand):
    help = (
        "Collect a pg_stat_statements snapshot of every enabled monitored database (or the one "
        "named), once or every interval. Exits non-zero when a database failed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", metavar="NAME", help="only this monitored database")
        parser.add_argument(
            "--every",
            metavar="DURATION",
            help="repeat at this interval (60s, 5m, ...) until Ctrl-C",
        )

    def handle(self, *args, database=None, every=None, **options):
        interval = duration(every) if every is not None else None
        if interval is None:
            failures = self.collect_round(database)
            if failures:
                raise CommandError(f"{failures} database(s) failed")
            return
        try:
            while True:
                started = time.monotonic()
                self.collect_round(database)
                close_old_connections()
                time.sleep(max(0.0, started + interval - time.monotonic()))
        except KeyboardInterrupt:
            self.stdout.write("collect: stopped")

    def collect_round(self, name):
        """Collect once; one line per database; returns how many failed."""
        results = collect_all(name)
        if not results:
            what = f"no enabled monitored database named {name!r}" if name else "none enabled"
            raise CommandError(f"nothing to collect: {what} (add one in the admin)")
        failures = 0
        for database, outcome in results:
            if isinstance(outcome, CollectionError):
                failures += 1
                self.stderr.write(f"FAILED {outcome}")
            else:
                line = (
                    f"ok {database.name}: {outcome.statement_count} statements, "
                    f"{outcome.stats.count()} queries in {outcome.duration_ms:.0f} ms"
                )
                if outcome.reset_detected:
                    line += " (statistics were reset since the previous snapshot)"
                self.stdout.write(line)
        return failures
