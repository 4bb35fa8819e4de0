"""Collection targets: connecting to a monitored database, and scratch targets.

`connect` is how the app opens a connection to any monitored database. The demo,
`bench_collect` and the tests monitor scratch databases next to the app's database: same
host, port and role as DATABASES["default"], other database name.

What the app runs on a target is not the target's workload: its sessions turn
pg_stat_statements off (`pg_stat_statements.track = none`) where the role may (a superuser,
or `GRANT SET ON PARAMETER pg_stat_statements.track`, PostgreSQL 15+), and every statement it
sends starts with MARKER, so that where the role may not, the collector still leaves them out
and they never share a text (hence an entry) with the workload's own BEGIN or ROLLBACK. The
marker is keyed with SECRET_KEY: a workload cannot hide behind it.

Nothing a target's owner or users configured may steer what the app runs there: sessions pin
`search_path` to pg_catalog (a database's or role's own search_path, or a schema anyone may
write to, could otherwise put their operators and functions before the built-in ones), and a
session that is still busy after its deadline is cut off, since a server that stalls while
its TCP stack still answers defeats every timeout the server or the kernel keeps.
"""

import hashlib
import os
import socket
import threading
from contextlib import contextmanager

import psycopg
from django.conf import settings
from django.utils.crypto import salted_hmac
from psycopg import conninfo, sql
from psycopg.adapt import Loader
from psycopg.pq import Format

CONNECT_TIMEOUT_SECONDS = 5
MAX_CONNECT_TIMEOUT_SECONDS = 30
# TCP keepalives: a target that vanishes from the network mid-read is noticed within about a
# minute instead of the kernel's two hours.
KEEPALIVES = {
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3
}
MAINTENANCE_DATABASE = "postgres"
MARKER = f"/* pganalytics {salted_hmac('pganalytics.targets', 'marker').hexdigest()[:16]} */"
PINNED_SEARCH_PATH = "pg_catalog, pg_temp"
# Pinned in every session: the search_path, and a check every second that we are still
# connected, so that a statement we gave up on (targets.deadline) ends on the server too.
PINNED = (
    f"-c search_path={PINNED_SEARCH_PATH.replace(' ', '')} "
    "-c client_connection_check_interval=1000"
)
UNTRACKED = "-c pg_stat_statements.track=none"
# Digests of DSNs whose role may not turn tracking off: each failed attempt is a FATAL line in
# the target's log, so it is made once per process.
_tracked = set()
_SETTING_KEYWORDS = {"HOST": "host", "PORT": "port", "USER": "user", "PASSWORD": "password"}


class _Utf8Loader(Loader):
    """Text as UTF-8, invalid bytes replaced: a SQL_ASCII database may hold any bytes, the
    server sends them unconverted, and psycopg would return bytes for its text columns."""

    def load(self, data):
        return bytes(data).decode("utf-8", "replace")


class _Utf8BinaryLoader(_Utf8Loader):
    """The same for binary cursors (text and name travel alike in both formats)."""

    format = Format.BINARY


@contextmanager
def deadline(connection, seconds):
    """`connection`, closed on leaving; cut off if still open after `seconds` (what it was
    waiting for then raises psycopg.OperationalError)."""
    guard = threading.Lock()
    timer = threading.Timer(seconds, _cut, [connection, guard])
    timer.daemon = True
    timer.start()
    try:
        yield connection
    finally:
        with guard:
            timer.cancel()
            connection.close()


def _cut(connection, guard):
    """Shut the connection's socket down, waking whatever waits on it; the descriptor stays
    the connection's (a duplicate is shut, then closed), so none is closed under its feet."""
    with guard:
        if connection.closed:
            return
        with socket.socket(fileno=os.dup(connection.pgconn.socket)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


def connect(dsn, *, options="", **parameters):
    """A psycopg connection to a monitored database, untracked where the role may, with
    search_path pinned, text always returned as str.

    It gives up connecting after CONNECT_TIMEOUT_SECONDS and uses TCP keepalives, unless
    the DSN says otherwise, but never waits longer than MAX_CONNECT_TIMEOUT_SECONDS (a
    DSN's 0, no limit, included: deadline() covers a connection only once it is made);
    `options` (`-c name=value ...`) add to the DSN's own. The
    session asks for `pg_stat_statements.track = none`; a role that may not set it is
    connected again without, and later connections of this process do not ask again (its
    statements must then start with MARKER). A SQL_ASCII database's text, which the server
    cannot convert, is decoded as UTF-8 with invalid bytes replaced.
    """
    given = conninfo.conninfo_to_dict(dsn)
    parameters.update((key, value) for key, value in KEEPALIVES.items() if key not in given)
    wanted = int(given.get("connect_timeout") or CONNECT_TIMEOUT_SECONDS)
    parameters["connect_timeout"] = min(wanted if wanted > 0 else MAX_CONNECT_TIMEOUT_SECONDS,
                                        MAX_CONNECT_TIMEOUT_SECONDS)
    options = " ".join(filter(None, [given.get("options", ""), options, PINNED]))
    digest = hashlib.sha256(dsn.encode()).digest()
    connection = None
    if digest not in _tracked:
        try:
            connection = psycopg.connect(dsn, options=f"{options} {UNTRACKED}", **parameters)
        except psycopg.OperationalError as error:
            if "pg_stat_statements.track" not in str(error):
                raise
            _tracked.add(digest)
    if connection is None:
        connection = psycopg.connect(dsn, options=options, **parameters)
    if connection.info.parameter_status("server_encoding") == "SQL_ASCII":
        for type_name in ("text", "name"):
            for loader in (_Utf8Loader, _Utf8BinaryLoader):
                connection.adapters.register_loader(type_name, loader)
    return connection


def local_dsn(dbname):
    """A key=value DSN for `dbname` on the app database's server, as the app's role."""
    default = settings.DATABASES["default"]
    keywords = {keyword: default.get(key) for key, keyword in _SETTING_KEYWORDS.items()}
    return conninfo.make_conninfo(dbname=dbname, **{k: v for k, v in keywords.items() if v})


def ensure_database(dbname):
    """Create `dbname` if missing and pg_stat_statements in it; True when it was created."""
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [dbname]
        ).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with psycopg.connect(local_dsn(dbname), autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return not exists


def drop_database(dbname):
    """Drop `dbname` if it exists, closing any session still connected to it."""
    with psycopg.connect(local_dsn(MAINTENANCE_DATABASE), autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


def reset_statements(connection):
    """Reset pg_stat_statements for the connection's database only (never the whole server:
    other databases on it are monitored or tested too)."""
    connection.execute(
        "SELECT pg_stat_statements_reset(0,"
        " (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
    )
