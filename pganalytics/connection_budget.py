"""The start-up check of connections: what every process's pool may open against what the
database server accepts.

gunicorn's master runs it once its workers are known (gunicorn.conf.py's when_ready): the web
workers × their pool's maximum (MAX_DATABASE_CONNS; one persistent connection per thread
without the pool) plus the ML service's processes (ML_SERVICE_WORKERS workers and its job
runner, each with a pool of the same maximum, or two connections without it), against the
server's max_connections minus the connections it reserves (superuser_reserved_connections,
and reserved_connections from PostgreSQL 16). Over that, requests would fail at busy times
with "too many clients": a warning names the variables to change.
"""

import psycopg

RESERVED = ("superuser_reserved_connections", "reserved_connections")
ML_PROCESS_CONNECTIONS_UNPOOLED = 2  # a request or a job; the model watch or the heartbeat


def libpq_params(database):
    """psycopg.connect() keywords of a DATABASES entry (no Django connection needed)."""
    params = {
        "dbname": database["NAME"], "user": database["USER"], "password": database["PASSWORD"],
        "host": database["HOST"], "port": database["PORT"],
        "connect_timeout": database["OPTIONS"].get("connect_timeout"),
    }
    return {key: value for key, value in params.items() if value not in ("", None)}


def server_limits(database):
    """(max_connections, connections reserved) of the server holding `database`."""
    with psycopg.connect(**libpq_params(database)) as connection:
        settings = dict(
            connection.execute(
                "SELECT name, setting::int FROM pg_settings WHERE name = ANY(%s)",
                [["max_connections", *RESERVED]],
            ).fetchall()
        )
    return settings["max_connections"], sum(settings.get(name, 0) for name in RESERVED)


def warning(*, workers, threads, database, ml_workers, max_connections, reserved):
    """The warning when the processes may open more connections than the server accepts,
    else None."""
    pool = database["OPTIONS"].get("pool")
    per_worker = pool["max_size"] if pool else threads
    per_ml_process = pool["max_size"] if pool else ML_PROCESS_CONNECTIONS_UNPOOLED
    ml_processes = ml_workers + 1 if ml_workers else 0  # its workers and the job runner
    wanted = workers * per_worker + ml_processes * per_ml_process
    accepted = max_connections - reserved
    if wanted <= accepted:
        return None
    each = f"MAX_DATABASE_CONNS={per_worker}" if pool else f"{threads} threads, no pool"
    return (
        f"pganalytics: the app's processes may open {wanted} connections to the database but "
        f"the server accepts {accepted} (max_connections={max_connections} minus {reserved} "
        f"reserved): {workers} gunicorn workers x {per_worker} ({each}) + the ML service's "
        f"{ml_processes} processes (ML_SERVICE_WORKERS={ml_workers} and its runner) x "
        f"{per_ml_process}. Lower MAX_DATABASE_CONNS, the workers (--workers) or "
        f"ML_SERVICE_WORKERS, or raise max_connections on the server."
    )


def check(workers, threads):
    """The warning for this configuration and this server, or None; a server that does not
    answer is the request path's to report (503s, /healthz), not a reason to stop."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    try:
        max_connections, reserved = server_limits(database)
    except psycopg.Error:
        return None
    return warning(
        workers=workers, threads=threads, database=database,
        ml_workers=settings.ML_SERVICE_WORKERS, max_connections=max_connections,
        reserved=reserved,
    )
