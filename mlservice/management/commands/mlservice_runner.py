"""`manage.py mlservice_runner`: runs queued training jobs, one at a time (mlservice.jobs).
`manage.py mlservice` starts it beside gunicorn, under mlservice.settings, and restarts it
when it dies."""

import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mlservice import jobs


class Command(BaseCommand):
    help = "Run the ML service's queued training jobs until stopped (SIGTERM or Ctrl-C)."

    def handle(self, *args, **options):
        if not hasattr(settings, "ML_JOB_HEARTBEAT_TIMEOUT"):
            raise CommandError("run it with DJANGO_SETTINGS_MODULE=mlservice.settings")
        stop_on_sigterm()
        runner = jobs.runner_name()
        self.stderr.write(f"mlservice runner {runner}: waiting for training jobs")
        try:
            jobs.serve(runner)
        except KeyboardInterrupt:
            stopping()
            self.stderr.write(f"mlservice runner {runner}: stopped")


def stop_on_sigterm():
    """SIGTERM stops the process as Ctrl-C does: a KeyboardInterrupt, so a job in training is
    marked failed and `finally` blocks run."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def stopping():
    """Once stopping, later SIGTERMs and Ctrl-Cs are ignored: a process group stopped as a
    whole hears the signal twice (from the terminal or `kill`, then from `mlservice`), and a
    second interrupt would cut its clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
