"""`manage.py bench_db [--workers 2] [--concurrency 8] [--requests 2000] [--rounds 3] [--json]`.

The DB tuning layer measured: a gunicorn per mode of pganalytics.db_bench (a new connection
per request, persistent connections, the pool, the pool keeping 15 open), on its own port with
the same workers, serving a view that makes one query (`SELECT 1`) under the project's
middleware; the same load of concurrent HTTP clients on each, rounds interleaved so the
machine's drift spreads over all modes, one server at a time (local_servers.gunicorn, the
clients of load.Load). Throughput, p50 and p99 side by side, and the connections each mode
holds on the server afterwards (pg_stat_activity).
"""

import json
import os
import tempfile

import psycopg
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from tqdm import tqdm

from pganalytics.db_bench import MODES, application_name
from pganalytics.load import Figures, Load
from pganalytics.local_servers import gunicorn

PATH = "/one-query"
REFERENCE = "new"


class Command(BaseCommand):
    help = (
        "Serves one query per request with a new connection each time, persistent connections "
        "and the pool (real gunicorn workers, concurrent HTTP clients) and prints req/s, p50, "
        "p99 and the connections held, side by side."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per mode")
        parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
        parser.add_argument("--requests", type=int, default=2000, help="requests per round")
        parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, workers, concurrency, requests, rounds, **options):
        for name, value in [("workers", workers), ("concurrency", concurrency),
                            ("requests", requests), ("rounds", rounds)]:
            if value < 1:
                raise CommandError(f"--{name} must be at least 1")
        loads = {mode: Figures() for mode in MODES}
        held = {}
        warm_up = 2 * concurrency
        total = rounds * len(MODES) * (warm_up + requests)
        with tqdm(total=total, unit="req", leave=False) as bar:
            for _ in range(rounds):  # interleaved: the machine's drift spreads over all modes
                for mode in MODES:
                    load, held[mode] = self.measure(
                        mode, workers, concurrency, warm_up, requests, bar
                    )
                    loads[mode].add(load)
        report = self.report(loads, held, workers, concurrency)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.print_table(report)

    def measure(self, mode, workers, concurrency, warm_up, requests, progress):
        """One round of `mode`: its own server, alone (a server kept between rounds would
        hold its connections while another mode is measured), warmed up, then `requests`;
        returns the load and the connections it held at the end."""
        run = os.getpid()
        app = f"pganalytics.db_bench:application({mode!r}, {run})"
        with tempfile.TemporaryFile("w+") as log:
            with gunicorn(workers, {}, app=app, ready_path=PATH, log=log) as url:
                for count in (warm_up, requests):
                    load = Load(url, [PATH], {}, concurrency=concurrency, requests=count, hot=0)
                    figures = load.run(progress)
                held = connections_held(application_name(mode, run))
            if figures.errors:
                log.seek(0)
                self.stderr.write(
                    f"{mode}: {figures.errors} errors; the server's log ends:\n"
                    f"{log.read()[-1500:]}"
                )
        return figures, held

    def report(self, loads, held, workers, concurrency):
        reference = loads[REFERENCE].requests_per_s
        rows = [
            {
                "mode": mode,
                "label": MODES[mode][0],
                "requests": len(load.latencies) - load.errors,
                "errors": load.errors,
                "requests_per_second": round(load.requests_per_s, 1),
                "p50_ms": rounded(load.percentile_ms(0.50)),
                "p99_ms": rounded(load.percentile_ms(0.99)),
                "vs_new_connection": round(load.requests_per_s / reference, 2),
                "connections_held": held[mode],
            }
            for mode, load in loads.items()
        ]
        by_mode = {row["mode"]: row for row in rows}
        return {
            "workers": workers,
            "concurrency": concurrency,
            "pooled_vs_new_connection": by_mode["pooled"]["vs_new_connection"],
            "persistent_vs_new_connection": by_mode["persistent"]["vs_new_connection"],
            "errors": sum(row["errors"] for row in rows),
            "modes": rows,
        }

    def print_table(self, report):
        self.stdout.write(
            f"{report['workers']} gunicorn workers per mode, {report['concurrency']} concurrent "
            f"clients, one query per request"
        )
        self.stdout.write(
            f"{'mode':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
            f"{'held':>5}  vs new"
        )
        for row in report["modes"]:
            self.stdout.write(
                f"{row['label']:<44} {row['requests_per_second']:>8,.1f} "
                f"{milliseconds(row['p50_ms']):>8} {milliseconds(row['p99_ms']):>8} "
                f"{row['errors']:>6} {row['connections_held']:>5}  "
                f"{row['vs_new_connection']:.2f}x"
            )


def rounded(value):
    return None if value is None else round(value, 2)


def milliseconds(value):
    return "-" if value is None else f"{value:.2f}"


def connections_held(name):
    """The server connections named `name` open now."""
    with psycopg.connect(**connection.get_connection_params()) as probe:
        return probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
        ).fetchone()[0]
