"""/healthz: the process answers and its database does, or says why not within seconds."""

import psycopg
from django.db import DatabaseError, connection
from django.http import JsonResponse

# A probe answers sooner than a request would (DATABASE_CONNECT_TIMEOUT, 3 s by default).
HEALTH_TIMEOUT_SECONDS = 2.0


def healthz(request):
    try:
        ping_database()
    except (DatabaseError, psycopg.Error) as error:
        return JsonResponse({"status": "error", "database": str(error)}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


def ping_database():
    pool = connection.pool
    if pool is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return
    pool.open()  # as Django does before its first checkout; no-op once open
    with pool.connection(timeout=HEALTH_TIMEOUT_SECONDS) as pooled:
        pooled.execute("SELECT 1")
