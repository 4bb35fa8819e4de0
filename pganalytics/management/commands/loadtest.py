"""`manage.py loadtest (--url URL | --serve) [--concurrency 100] [--requests 100] [--hot 0.8]
[--compare] [--ceiling] [--workers 4] [--database NAME] [--json]`: the cached API under a
load of concurrent clients (pganalytics.load), measured from outside.

--url loads a running server that uses this command's DATABASE_URL (the command makes the
load's viewer there and logs in once). --serve starts everything itself on the loopback: a
redis-server of its own for the caches' second tier, the ML service, and gunicorn with
--workers sync workers (gunicorn.conf.py), all stopped at the end; the caches start empty, so
the cold start is part of the figures. Then --compare runs the same load against the same
setup with caching off (CACHE_ENABLED=false) and --ceiling against /healthz (the cheapest
endpoint: one `SELECT 1`), printed side by side. The keys are those of the monitored database
--database (by default the one with the most snapshots); with --serve, when there is none,
the demo (`manage.py demo`) is played first.
"""

import json
from contextlib import ExitStack, nullcontext

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pganalytics.demo import run_demo
from pganalytics.load import Load, busiest_database, keys_of, load_viewer, login
from pganalytics.local_servers import free_port, gunicorn, own_redis
from pganalytics.management.commands.bench_mlclient import running_service

GOALS = {  # figure: (relation, bound)
    "hit_ratio": (">=", 0.8),
    "errors": ("==", 0),
    "cached_vs_uncached": (">=", 5.0),
    "cached_vs_ceiling": (">=", 0.5),
}
RUNS = (("cached", "cached"), ("uncached", "caching off"), ("ceiling", "/healthz"))


class Command(BaseCommand):
    help = "Load the cached API with concurrent clients: req/s, latency percentiles, hit ratio."

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
        target.add_argument("--serve", action="store_true",
                            help="start Redis, the ML service and gunicorn, and stop them after")
        parser.add_argument("--concurrency", type=int, default=100, help="concurrent clients")
        parser.add_argument("--requests", type=int, default=100, help="requests per client")
        parser.add_argument("--hot", type=float, default=0.8,
                            help="share of the requests on a fifth of the keys")
        parser.add_argument("--compare", action="store_true",
                            help="the same load with caching off (with --serve)")
        parser.add_argument("--ceiling", action="store_true", help="the same load on /healthz")
        parser.add_argument("--workers", type=int, default=4,
                            help="gunicorn workers (with --serve)")
        parser.add_argument("--database", metavar="NAME", help="whose URLs are the keys")
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args, url, serve, compare, workers, **options):
        if min(options["concurrency"], options["requests"], workers) < 1:
            raise CommandError("--concurrency, --requests and --workers must be >= 1")
        if not 0 <= options["hot"] <= 1:
            raise CommandError("--hot is a share: between 0 and 1")
        if compare and not serve:
            raise CommandError("--compare needs --serve (a server with caching off)")
        self.options = options
        database = busiest_database(options["database"])
        if database is None:
            if not serve or options["database"] not in (None, "demo"):
                raise CommandError(
                    "no monitored database with snapshots to load: run `manage.py demo` (or "
                    "`manage.py collect`) first, or name one with --database"
                )
            database = run_demo(report=self.stderr.write)
        keys = keys_of(database)
        credentials = load_viewer()
        runs = {}
        with ExitStack() as services:
            environment = self.started_services(services) if serve else {}
            with gunicorn(workers, environment) if serve else nullcontext(url) as served:
                cookies = login(served, *credentials)
                runs["cached"] = self.measure("cached", served, keys, cookies)
                if options["ceiling"]:
                    runs["ceiling"] = self.measure("/healthz", served, ["/healthz"], cookies)
            if compare:  # the cached server is gone: its workers leave the cores to this one
                uncached = {**environment, "CACHE_ENABLED": "false"}
                with gunicorn(workers, uncached) as served:
                    runs["uncached"] = self.measure("caching off", served, keys, cookies)
        figures = summary(runs, database, keys, workers if serve else None, options)
        self.stdout.write(json.dumps(figures) if options["json"] else table(figures))

    def started_services(self, services):
        """A Redis of its own and the ML service, in `services`; the app's environment."""
        redis_url = services.enter_context(own_redis())
        ml_url = f"http://127.0.0.1:{free_port()}"
        services.enter_context(running_service(ml_url))
        return {"CACHE_L2_URL": redis_url, "ML_SERVICE_URL": ml_url}

    def measure(self, name, url, keys, cookies):
        options = self.options
        total = options["concurrency"] * options["requests"]
        load = Load(
            url, keys, cookies, concurrency=options["concurrency"],
            requests=total, hot=options["hot"],
        )
        with tqdm(total=total, desc=name, unit="req", disable=options["json"]) as progress:
            return load.run(progress).summary()


def summary(runs, database, keys, workers, options):
    cached = runs["cached"]
    figures = {
        "hit_ratio": cached["hit_ratio"],
        "errors": sum(run["errors"] for run in runs.values()),
        "p99_ms": cached["p99_ms"],
        "requests_per_s": cached["requests_per_s"],
        "cached_vs_uncached": None,
        "cached_vs_ceiling": None,
        **runs,
        "database": database.name,
        "keys": len(keys),
        "concurrency": options["concurrency"],
        "requests_per_client": options["requests"],
        "hot": options["hot"],
        "workers": workers,
    }
    for other in ("uncached", "ceiling"):
        if other in runs:
            figures[f"cached_vs_{other}"] = (
                cached["requests_per_s"] / runs[other]["requests_per_s"]
            )
    return figures


def table(figures):
    runs = [(name, label) for name, label in RUNS if name in figures]
    rows = [("", *(label for _, label in runs))]
    for key, label, form in [
        ("requests", "requests", "{:,}"), ("requests_per_s", "req/s", "{:,.0f}"),
        ("p50_ms", "p50 ms", "{:.1f}"), ("p95_ms", "p95 ms", "{:.1f}"),
        ("p99_ms", "p99 ms", "{:.1f}"), ("errors", "errors", "{}"),
        ("hit_ratio", "hit ratio", "{:.1%}"),
    ]:
        rows.append((label, *(
            "-" if figures[name][key] is None else form.format(figures[name][key])
            for name, _ in runs
        )))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        f"{figures['concurrency']} clients x {figures['requests_per_client']} requests, "
        f"{figures['hot']:.0%} of them on a fifth of {figures['keys']} keys of "
        f"{figures['database']!r}" + (f", {figures['workers']} workers" if figures["workers"]
                                       else ""),
        "",
        *("  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                    for column, (cell, width) in enumerate(zip(row, widths)))
          for row in rows),
        "",
    ]
    for name in ("cached", "uncached", "ceiling"):
        for sample in figures.get(name, {}).get("error_samples", []):
            lines.append(f"error ({name}): {sample}")
    for figure, (relation, bound) in GOALS.items():
        value = figures[figure]
        if value is None:
            continue
        met = {">=": value >= bound, "==": value == bound}[relation]
        shown = f"{value:.2f}" if isinstance(value, float) else f"{value}"
        lines.append(f"{figure}: {shown} (goal {relation} {bound}: {'met' if met else 'MISSED'})")
    return "\n".join(lines) + "\n"
