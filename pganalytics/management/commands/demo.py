"""`manage.py demo`: real analytics for a new user in under a minute (see pganalytics/demo.py)."""

from django.core.management.base import BaseCommand, CommandError

from pganalytics.demo import DEFAULT_SNAPSHOTS, run_demo


class Command(BaseCommand):
    help = (
        "Create the sample database <app database>_demo on the app database's server, play a "
        "varied workload and collect snapshots of it as the monitored database 'demo'. "
        "Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument("--snapshots", type=int, default=DEFAULT_SNAPSHOTS)
        parser.add_argument("--scale", type=float, default=1.0, help="table sizes, 1 = full")

    def handle(self, *args, snapshots, scale, **options):
        if snapshots < 3 or scale <= 0:
            raise CommandError("--snapshots must be at least 3 and --scale above 0")
        run_demo(snapshots=snapshots, scale=scale, report=self.stdout.write)
