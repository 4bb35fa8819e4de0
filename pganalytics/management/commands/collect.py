"""`manage.py collect [--database NAME] [--every 60s]`: snapshots of the monitored databases."""

import signal
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.template.defaultfilters import pluralize

from pganalytics.collector import CollectionError, collect_all
from pganalytics.config import parse_period
from pganalytics.fingerprint import fold_whitespace


def duration(text):
    try:
        return parse_period(text)
    except ValueError as error:
        raise CommandError(f"--every {text!r}: {error}")


class Command(BaseCommand):
    help = (
        "Collect a pg_stat_statements snapshot of every enabled monitored database (or the one "
        "named), once or every interval. Once: exits non-zero when a database failed. Every "
        "interval: reports failures and goes on until Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", metavar="NAME", help="only this monitored database")
        parser.add_argument(
            "--every",
            metavar="DURATION",
            help="repeat at this interval (60s, 5m, ...) until Ctrl-C or SIGTERM",
        )

    def handle(self, *args, database=None, every=None, **options):
        interval = duration(every) if every is not None else None
        if interval is None:
            failures = self.collect_round(database)
            if failures:
                raise CommandError(f"{failures} database{pluralize(failures)} failed")
            return
        previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
        try:
            while True:
                started = time.monotonic()
                try:
                    self.collect_round(database)
                except CommandError as error:  # nothing to collect yet: an admin may add one
                    self.stderr.write(str(error))
                except Exception as error:  # e.g. our own database unreachable: next round
                    reason = fold_whitespace(str(error))
                    self.stderr.write(f"round failed: {type(error).__name__}: {reason}")
                close_old_connections()
                time.sleep(max(0.0, started + interval - time.monotonic()))
        except KeyboardInterrupt:
            self.stdout.write("collect: stopped")
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)

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
                statements, queries = outcome.statement_count, outcome.stats.count()
                line = (
                    f"ok {database.name}: {statements} statement{pluralize(statements)}, "
                    f"{queries} quer{pluralize(queries, 'y,ies')} in {outcome.duration_ms:.0f} ms"
                )
                if outcome.reset_detected:
                    line += " (statistics were reset since the previous snapshot)"
                if outcome.warning:
                    line += f" ({outcome.warning})"
                self.stdout.write(line)
        return failures
