"""`manage.py advise`: the index advisor's suggestions for a monitored database, from a
terminal (see pganalytics/analytics/advisor.py)."""

import json

from django.core.management.base import BaseCommand, CommandError

from pganalytics.analytics import services
from pganalytics.models import MonitoredDatabase


class Command(BaseCommand):
    help = (
        "Suggested indexes for the top statements of a monitored database by total time over "
        "the last 24 h, the largest estimated saving first (cost reduction x calls); "
        "unverified ones (no hypopg there) last."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", required=True, help="the monitored database's name")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="one JSON object on stdout"
        )

    def handle(self, *args, database, as_json, **options):
        found = MonitoredDatabase.objects.filter(name=database).first()
        if found is None:
            raise CommandError(f"no monitored database named {database!r}")
        rows = services.database_suggestions(found)
        if as_json:
            document = {"database": found.name, "suggestions": rows}
            self.stdout.write(json.dumps(document, default=str))
            return
        if not rows:
            self.stdout.write(f"no suggestion for the top statements of {found.name!r}")
        for row in rows:
            self.stdout.write(describe(row))


def describe(row):
    """Two lines: the statement to run and what it is worth, then the query it serves."""
    if row["verified"]:
        worth = (
            f"verified: cost {row['cost_before']:,.2f} -> {row['cost_after']:,.2f}, "
            f"saving {row['estimated_saving']:,.0f} over {row['calls']:,} calls"
        )
    else:
        worth = f"unverified: {row['note']}"
    query = " ".join(row["query"].split())
    return f"{row['statement']};\n    {worth}\n    for: {query[:90]}"
