"""Format modules (settings.FORMAT_MODULE_PATH), and timestamps in text built outside templates."""

from django.utils import formats, timezone


def timestamp(value):
    """`value` as the pages and the admin show it: `2026-12-01 10:28:56 UTC`."""
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")
