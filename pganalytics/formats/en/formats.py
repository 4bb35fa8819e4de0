"""English formats (settings.FORMAT_MODULE_PATH): one timestamp format on the pages, in the
admin's lists and in its messages, `2026-12-01 10:28:56 UTC`, as the cache dashboard's
"last cleared" writes it. The JSON API keeps ISO 8601."""

DATETIME_FORMAT = SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
