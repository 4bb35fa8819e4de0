"""`cache_stats [--json] [--clear NAME | --clear-all] [--server URL]`: the named caches' figures.

With the Redis second tier (CACHE_L2_URL) the figures are summed over every live process
and a clear reaches them all. Without it each process has its own caches: this command then
sees and clears those of the process it runs in, and `--server URL` reads a running
server's figures from its Prometheus endpoint (`URL/metrics`, open to loopback by default;
elsewhere pass its bearer token with `--token`, which defaults to settings.METRICS_TOKEN).
"""

import json

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client.parser import text_string_to_metric_families

from caching import dashboard, registry

COLUMNS = ("entries", "max_entries", "hit_ratio", "hits", "misses", "evictions", "expirations")
SERVER_TIMEOUT_SECONDS = 5


class Command(BaseCommand):
    help = "Prints each named cache's figures and totals; clears one or all of them."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--server", metavar="URL", help="read a running server's /metrics")
        parser.add_argument(
            "--token", default=getattr(settings, "METRICS_TOKEN", ""),
            help="the server's metrics bearer token (default: settings.METRICS_TOKEN)",
        )
        clearing = parser.add_mutually_exclusive_group()
        clearing.add_argument("--clear", metavar="NAME", help="clear this cache first")
        clearing.add_argument("--clear-all", action="store_true", help="clear every cache first")

    def handle(self, *args, **options):
        if options["server"] and (options["clear"] or options["clear_all"]):
            raise CommandError(
                "--clear/--clear-all do not go through --server: without CACHE_L2_URL, clear a "
                "server's caches from its admin cache dashboard"
            )
        cleared = self.clear(options)
        if options["server"]:
            rows = server_rows(options["server"], options["token"])
        else:
            rows = self.local_rows()
        report = {"caches": rows, "totals": dashboard.totals(rows), "cleared": cleared}
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.print_table(report)

    def clear(self, options):
        try:
            if options["clear"]:
                return {options["clear"]: registry.clear(options["clear"])}
        except registry.UnknownCache as error:
            raise CommandError(str(error))
        return registry.clear_all() if options["clear_all"] else {}

    def local_rows(self):
        return [dashboard.row(described) for described in registry.describe_all()]

    def print_table(self, report):
        for name, count in report["cleared"].items():
            self.stdout.write(f"cleared {name}: {dashboard.entries(count)}")
        header = f"{'cache':<14}" + "".join(f"{column:>13}" for column in COLUMNS)
        self.stdout.write(header)
        for row in [*report["caches"], {"name": "total", **report["totals"]}]:
            cells = [
                f"{row[column]:>12.1%}" if column == "hit_ratio" else f"{row[column]:>12,}"
                for column in COLUMNS
            ]
            self.stdout.write(f"{row['name']:<14} " + " ".join(cells))


def server_rows(url, token=""):
    """Rows (the local row's figures) of each cache a server's Prometheus endpoint reports."""
    endpoint = url.rstrip("/") + "/metrics"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(endpoint, headers=headers, timeout=SERVER_TIMEOUT_SECONDS)
        response.raise_for_status()
    except requests.RequestException as error:
        raise CommandError(f"{endpoint}: {error}")
    rows = {}
    for family in text_string_to_metric_families(response.text):
        if not family.name.startswith("cache_"):
            continue
        for sample in family.samples:
            field = sample.name.removeprefix("cache_").removesuffix("_total")
            if field in COLUMNS and "cache" in sample.labels:
                rows.setdefault(sample.labels["cache"], {})[field] = int(sample.value)
    if not rows:
        raise CommandError(f"{endpoint}: no cache_* metrics (is it a pganalytics server?)")
    return [
        {"name": name, **figures, "hit_ratio": dashboard.hit_ratio(figures)}
        for name, figures in rows.items()
    ]
