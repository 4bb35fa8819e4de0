"""`manage.py first_login`: the first admin login, so that `scripts/run` leaves no step out."""

import os
import sys

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from pganalytics.config import masked

CREATE_COMMAND = ".venv/bin/python manage.py createsuperuser"


def command():
    """CREATE_COMMAND, with the DATABASE_URL this process was given (its password masked: the
    user puts it back), so that the login is made in the database being served."""
    url = os.environ.get("DATABASE_URL")
    return f"DATABASE_URL='{masked(url)}' {CREATE_COMMAND}" if url else CREATE_COMMAND


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
            self.stdout.write(f"pganalytics: no admin login yet, create one with: {command()}")
