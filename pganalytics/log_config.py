"""The log format of every process (the web app, the ML service): one line on stderr each,
with the id of the request it was written for (pganalytics.request_id)."""

# One format on stderr, each line with its request's id; Django's own "django" logger hands
# its records (500s with their traceback) to the root logger instead of printing them twice,
# runserver's request lines included; a 503 for a database that does not answer is one line,
# not a traceback per request.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "pganalytics.request_id.RequestIdFilter"},
        "database_down": {"()": "pganalytics.errors.DatabaseDownFilter"},
    },
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "line",
        }
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": [], "level": "WARNING"},
        "django.request": {"filters": ["database_down"]},
        "django.server": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
