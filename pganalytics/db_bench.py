"""What `bench_db` serves: the app's settings with one database mode and one view.

gunicorn loads `pganalytics.db_bench:application('pooled', run)` (one of MODES; `run` tells
this benchmark's connections apart on the server): the project's
settings, middleware and database, but this module as the URLconf, so the view that makes
one query is reachable only in the benchmark's own servers, never through pganalytics.urls.
"""

import os

from django.db import connection
from django.http import HttpResponse
from django.urls import path

from pganalytics.config import Config
from pganalytics.db import configured_database

# mode -> (what the table calls it, variables over the environment's, CONN_MAX_AGE override)
MODES = {
    "new": ("new connection per request", {"DATABASE_POOL": "false"}, 0),
    "persistent": ("persistent (CONN_MAX_AGE + health checks)", {"DATABASE_POOL": "false"}, None),
    "pooled": ("pool (the configured sizes)", {"DATABASE_POOL": "true"}, None),
    "pooled_15": (
        "pool keeping 15 open (the former default)",
        {"DATABASE_POOL": "true", "MAX_IDLE_DATABASE_CONNS": "15", "MAX_DATABASE_CONNS": "50"},
        None,
    ),
}


def application_name(mode, run):
    """How the mode's connections name themselves on the server (pg_stat_activity)."""
    return f"pganalytics bench_db {run} {mode}"


def database_for(mode, run, environ=os.environ):
    """The DATABASES entry of `mode`: the app's own tuning layer, read from the environment
    with the mode's variables on top."""
    _, variables, conn_max_age = MODES[mode]
    database = configured_database(Config({**environ, **variables}))
    if conn_max_age is not None:
        database.update(CONN_MAX_AGE=conn_max_age, CONN_HEALTH_CHECKS=False)
    database["OPTIONS"]["application_name"] = application_name(mode, run)
    return database


def one_query(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    return HttpResponse(str(value), content_type="text/plain")


urlpatterns = [path("one-query", one_query)]


def application(mode, run):
    """The WSGI application of `mode` (gunicorn calls this in each worker, before Django
    is set up: nothing has read the settings it changes)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pganalytics.settings")
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    engine = settings.DATABASES["default"]["ENGINE"]
    settings.DATABASES = {"default": {**database_for(mode, run), "ENGINE": engine}}
    settings.ROOT_URLCONF = __name__
    return get_wsgi_application()
