"""`manage.py check_database`: the app's database answers, or one line saying why and exit 1.

`scripts/run` calls it before migrating, so that a database that is down is reported as such
instead of with migrate's traceback."""

from django.core.management.base import BaseCommand

from pganalytics.db import exit_unless_reachable


class Command(BaseCommand):
    help = "Check that the app's database answers; if not, say why in one line and exit 1."

    def handle(self, *args, **options):
        exit_unless_reachable()
