#!/usr/bin/env python
"""Django's command-line utility; a configuration error is one line, not a traceback."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pganalytics.settings")
    from django.core.management import execute_from_command_line

    from pganalytics.config import exit_on_config_error

    with exit_on_config_error():
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
