"""`manage.py first_login`: the first admin login, so that `scripts/run` leaves no step out."""

import sys

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

CREATE_COMMAND = ".venv/bin/python manage.py createsuperuser"


class Command(BaseCommand):
    help = (
        "When there is no superuser yet: on a terminal, create one (createsuperuser asks for "
        "the name and the password); otherwise print the command that does. Else nothing."
    )

    def handle(self, *args, **options):
        if get_user_model().objects.filter(is_superuser=True).exists():
            return
        if sys.stdin.isatty():
            self.stdout.write("pganalytics: no admin login yet, create the first one:")
            call_command("createsuperuser")
        else:
            self.stdout.write(f"pganalytics: no admin login yet, create one with: {CREATE_COMMAND}")
