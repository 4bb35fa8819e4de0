"""`manage.py bench_db [--workers 2] [--concurrency 8] [--requests 2000] [--rounds 3] [--json]`.

The DB tuning layer measured: one gunicorn per mode of pganalytics.db_bench (a new connection
per request, persistent connections, the pool, the pool keeping 15 open), each on its own port
with the same workers, serving a view that makes one query (`SELECT 1`) under the project's
middleware; the same load of concurrent HTTP clients on each, rounds interleaved so the
machine's drift spreads over all modes. Throughput, p50 and p99 side by side, and the
connections each mode holds on the server afterwards (pg_stat_activity).
"""

import json
import os

import psycopg
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from tqdm import tqdm

from pganalytics import http_load
from pganalytics.db_bench import MODES, application_name

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
        run = os.getpid()
        servers = {
            mode: http_load.Gunicorn(f"pganalytics.db_bench:application({mode!r}, {run})", workers)
            for mode in MODES
        }
        try:
            loads = self.measure(servers, concurrency, requests, rounds)
            held = {mode: connections_held(application_name(mode, run)) for mode in MODES}
        finally:
            for server in servers.values():
                server.stop()
        report = self.report(loads, held, workers, concurrency)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.print_table(report)

    def measure(self, servers, concurrency, requests, rounds):
        for server in servers.values():
            server.wait_until_serving(PATH)
        loads = {mode: http_load.Load() for mode in servers}
        warm_up = 2 * concurrency
        total = len(servers) * (warm_up + rounds * requests)
        with tqdm(total=total, unit="req", leave=False) as bar:
            for server in servers.values():  # every worker's connections open, as in service
                http_load.run(server.port, PATH, warm_up, concurrency, bar.update)
            for _ in range(rounds):
                for mode, server in servers.items():
                    loads[mode].add(
                        http_load.run(server.port, PATH, requests, concurrency, bar.update)
                    )
        return loads

    def report(self, loads, held, workers, concurrency):
        reference = loads[REFERENCE].requests_per_second
        rows = [
            {
                "mode": mode,
                "label": MODES[mode][0],
                "requests": len(load.latencies),
                "errors": load.errors,
                "requests_per_second": round(load.requests_per_second, 1),
                "p50_ms": round(load.percentile_ms(0.50), 2),
                "p99_ms": round(load.percentile_ms(0.99), 2),
                "vs_new_connection": round(load.requests_per_second / reference, 2),
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
                f"{row['label']:<44} {row['requests_per_second']:>8,.1f} {row['p50_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {row['errors']:>6} {row['connections_held']:>5}  "
                f"{row['vs_new_connection']:.2f}x"
            )


def connections_held(name):
    """The server connections named `name` open now."""
    with psycopg.connect(**connection.get_connection_params()) as probe:
        return probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
        ).fetchone()[0]
