"""`manage.py collect [--database NAME] [--every 60s] [--concurrency N]`: snapshots of the
monitored databases."""

import signal
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.template.defaultfilters import pluralize

from pganalytics.analytics import history
from pganalytics.analytics.collector import (
    CollectionError,
    claim_due,
    collect_all,
    enabled_databases,
    outcome_in_own_connection,
    release,
)
from pganalytics.config import parse_period
from pganalytics.fingerprint import fold_whitespace

POLL_SECONDS = 1.0  # how often `--every` looks for due databases (4 times a shorter period)
COMPACT_SECONDS = 300  # how often `--every` rolls up and applies retention (history.compact)


def duration(text):
    try:
        return parse_period(text)
    except ValueError as error:
        raise CommandError(f"--every {text!r}: {error}")


def nothing_to_collect(name):
    what = f"no enabled monitored database named {name!r}" if name else "none enabled"
    return f"nothing to collect: {what} (add one in the admin)"


class Command(BaseCommand):
    help = (
        "Collect a pg_stat_statements snapshot of every enabled monitored database (or the one "
        "named), once or every interval, N at a time. Once: exits non-zero when a database "
        "failed. Every interval: collectors in several processes share the databases, each "
        "collected once a period, and the history is rolled up and pruned (`compact`) every "
        "few minutes; reports failures and goes on until Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", metavar="NAME", help="only this monitored database")
        parser.add_argument(
            "--every",
            metavar="DURATION",
            help="repeat at this interval (60s, 5m, ...) until Ctrl-C or SIGTERM",
        )
        parser.add_argument(
            "--concurrency",
            metavar="N",
            type=int,
            default=1,
            help="collect up to N databases at once, each in its own thread (default 1)",
        )

    def handle(self, *args, database=None, every=None, concurrency=1, **options):
        pool = settings.DATABASES["default"]["OPTIONS"].get("pool")
        most = pool["max_size"] - 1 if pool else None  # one connection stays the main thread's
        if concurrency < 1 or (most is not None and concurrency > most):
            limit = f" and at most {most} (MAX_DATABASE_CONNS - 1)" if most else ""
            raise CommandError(f"--concurrency {concurrency}: expected at least 1{limit}")
        if every is None:
            results = collect_all(database, concurrency)
            if not results:
                raise CommandError(nothing_to_collect(database))
            failures = sum(not self.report(*result) for result in results)
            if failures:
                raise CommandError(f"{failures} database{pluralize(failures)} failed")
            return
        period = timedelta(seconds=duration(every))
        previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
        try:
            self.collect_every(database, period, concurrency)
        except KeyboardInterrupt:
            self.stdout.write("collect: stopped")
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)

    def collect_every(self, name, period, concurrency):
        """Claim due databases while a worker is free and report each as it is done, forever.

        A hung target holds one worker until its timeouts, and is not claimed again meanwhile;
        the others are claimed and collected by the free workers on time. An error of ours
        (our own database unreachable) stops claiming for a period, not the command.
        """
        poll = min(POLL_SECONDS, period.total_seconds() / 4)
        running, retry_at, said_nothing, compact_at = {}, 0.0, False, 0.0
        with ThreadPoolExecutor(concurrency) as workers:
            while True:
                try:
                    free = concurrency - len(running)
                    if free and time.monotonic() >= retry_at:
                        busy = [database.pk for database in running.values()]
                        for database in claim_due(period, free, name, exclude=busy):
                            running[workers.submit(outcome_in_own_connection, database)] = database
                        idle = not running and not enabled_databases(name).exists()
                        if idle and not said_nothing:  # an admin may add one
                            self.stderr.write(nothing_to_collect(name))
                        said_nothing = idle
                    if time.monotonic() >= compact_at:
                        compact_at = time.monotonic() + COMPACT_SECONDS
                        self.compact()
                    if running:
                        done, _ = wait(running, timeout=poll, return_when=FIRST_COMPLETED)
                        for future in done:
                            database = running.pop(future)
                            self.report(database, future.result())
                            release(database, period)
                    else:
                        time.sleep(poll)
                except Exception as error:
                    reason = f"{type(error).__name__}: {fold_whitespace(str(error))}"
                    again = f"{period.total_seconds():g}s"
                    self.stderr.write(f"collector error: {reason} (claiming again in {again})")
                    retry_at = time.monotonic() + period.total_seconds()
                close_old_connections()

    def compact(self):
        """history.compact(), reported when it did something."""
        done = history.compact()
        if done.hours or done.dropped_raw or done.dropped_hourly or done.deleted_daily:
            self.stdout.write(
                f"compact: {done.hours} hour{pluralize(done.hours)} rolled up, "
                f"{len(done.dropped_raw) + len(done.dropped_hourly)} old day partition"
                f"{pluralize(len(done.dropped_raw) + len(done.dropped_hourly))} dropped"
            )

    def report(self, database, outcome):
        """One line for the outcome of collecting `database`; True when it was collected."""
        if isinstance(outcome, CollectionError):
            self.stderr.write(f"FAILED {outcome}")
            return False
        statements, moved = outcome.statement_count, outcome.stats.count()
        line = (
            f"ok {database.name}: {statements} statement{pluralize(statements)}, "
            f"{moved} moved, in {outcome.duration_ms:.0f} ms"
        )
        if outcome.reset_detected:
            line += " (statistics were reset since the previous snapshot)"
        if outcome.warning:
            line += f" ({outcome.warning})"
        self.stdout.write(line)
        return True
