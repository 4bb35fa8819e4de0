"""runserver that first checks the app's database answers: if not, one line and exit 1,
instead of a traceback, the pool's retry lines, and a server that keeps running broken."""

from django.contrib.staticfiles.management.commands.runserver import Command as StaticRunserver

from pganalytics.db import exit_unless_reachable


class Command(StaticRunserver):
    def handle(self, *args, **options):
        exit_unless_reachable()  # in the autoreloader's parent, before any child is started
        super().handle(*args, **options)
