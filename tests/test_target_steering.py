"""Nothing a monitored server's users or owners configure steers what the app runs there: not
operators of their own put first by a search_path (the role's, the database's, or changed by
a planned function), not a statement_timeout a planned function turns off, not a server that
stops answering mid-session, not a statement dressed up with the app's marker. And a
statement is planned with the search_path its role's sessions get."""

import os
import socket
import struct
import tempfile
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import conninfo
from psycopg import sql as pgsql

from caching import registry
from pganalytics.analytics import explain, services
from pganalytics.analytics.collector import collect
from pganalytics.models import MonitoredDatabase, Query
from pganalytics.targets import local_dsn

# In the attacker's own schema ("$user" comes first in its search_path): an operator that the
# app's follow-up lookups would pick (`reltuples >= 0`), which goes back to the session's
# role and writes a server file; and a function the planner folds, which points the
# transaction's search_path at that schema and turns statement_timeout off.
HIJACK = """
CREATE TABLE t2 AS SELECT g AS a FROM generate_series(1, 100) g;
ANALYZE t2;
CREATE FUNCTION ge(real, integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE 'RESET ROLE';
  EXECUTE format('COPY (SELECT current_user) TO %L', {spill});
  RETURN true;
END $$;
CREATE OPERATOR >= (LEFTARG = real, RIGHTARG = integer, FUNCTION = ge);
CREATE FUNCTION hijack() RETURNS integer IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('search_path', current_user || ', pg_catalog', true);
  PERFORM set_config('statement_timeout', '0', true);
  RETURN 50;
END $$;
"""
HIJACKED = "SELECT count(*) FROM t2 WHERE a < hijack()"


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture
def spill_path():
    path = f"{tempfile.gettempdir()}/pganalytics_steered_{uuid.uuid4().hex}"
    yield path
    if os.path.exists(path):
        os.unlink(path)


def as_role(target_name, role):
    return psycopg.connect(
        conninfo.make_conninfo(local_dsn(target_name), user=role), autocommit=True
    )


def test_what_runs_after_the_plan_cannot_be_steered_by_the_planned_code(
    target, target_name, monitored, make_role, spill_path
):
    attacker = make_role("hijacker")
    target.execute(
        pgsql.SQL("CREATE SCHEMA {0} AUTHORIZATION {0}").format(pgsql.Identifier(attacker))
    )
    with as_role(target_name, attacker) as connection:
        connection.execute(pgsql.SQL(HIJACK).format(spill=spill_path))
        connection.execute(HIJACKED)
    collect(monitored)
    query = Query.objects.get(database=monitored, text=HIJACKED)

    started = time.monotonic()
    plan = services.plan_of(monitored, query, version="v")

    assert plan["status"] == "ok", plan
    assert plan["summary"]["seq_scans"][0]["table_rows"] == 100  # looked up, as the monitor
    assert not os.path.exists(spill_path)
    assert time.monotonic() - started < 5


def test_a_database_search_path_does_not_steer_the_collector(
    target, target_name, monitored, make_role, spill_path
):
    attacker = make_role("pathsetter")
    name = pgsql.Identifier(attacker)
    target.execute(pgsql.SQL("CREATE SCHEMA {0} AUTHORIZATION {0}").format(name))
    with as_role(target_name, attacker) as connection:
        connection.execute(
            pgsql.SQL(
                "CREATE FUNCTION spill_eq(oid, regclass) RETURNS boolean LANGUAGE plpgsql AS $$"
                " BEGIN EXECUTE format('COPY (SELECT 1) TO %L', {}); RETURN $1 = $2::oid; END $$;"
                " CREATE OPERATOR = (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = spill_eq)"
            ).format(spill_path)
        )
    database = pgsql.Identifier(target_name)
    target.execute(
        pgsql.SQL("ALTER DATABASE {} SET search_path = {}, pg_catalog").format(database, name)
    )
    try:
        snapshot = collect(monitored)
    finally:
        target.execute(pgsql.SQL("ALTER DATABASE {} RESET search_path").format(database))

    assert snapshot.statement_count > 0
    assert not os.path.exists(spill_path)


def test_a_statement_is_planned_with_the_search_path_of_its_role(
    target, target_name, monitored, make_role
):
    app = make_role("pathed")
    name, database = pgsql.Identifier(app), pgsql.Identifier(target_name)
    target.execute(pgsql.SQL("CREATE SCHEMA shop AUTHORIZATION {}").format(name))
    target.execute(
        pgsql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = shop").format(name, database)
    )
    try:
        with as_role(target_name, app) as connection:
            connection.execute(
                "CREATE TABLE gadgets AS SELECT n AS id, 'g' || n AS label"
                " FROM generate_series(1, 20000) n; ANALYZE gadgets"
            )
            connection.execute("SELECT label FROM gadgets WHERE id > %s", [1])
        collect(monitored)
        text = "SELECT label FROM gadgets WHERE id > $1"
        query = Query.objects.get(database=monitored, text=text)
        plan = services.plan_of(monitored, query, version="v")
    finally:
        target.execute("DROP SCHEMA shop CASCADE")

    assert plan["status"] == "ok", plan
    (scan,) = plan["summary"]["seq_scans"]
    assert (scan["relation"], scan["table_rows"]) == ("gadgets", 20000)
    assert plan["raw"][0]["Plan"]["Schema"] == "shop"


class StallingProxy:
    """Forwards connections to the local PostgreSQL, but stops passing the server's answers
    once the connection is ready for its first query: a server that hangs with its TCP up."""

    def __init__(self, port=5432):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port = port
        self.sockets = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, server]
            threading.Thread(target=self.pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, True), daemon=True).start()

    def pipe(self, source, sink, stall_when_ready):
        """Copy `source` to `sink`; with `stall_when_ready`, stop after the first
        ReadyForQuery ('Z') message, reading the server's messages by their lengths."""
        pending = b""
        try:
            while data := source.recv(65536):
                if not stall_when_ready:
                    sink.sendall(data)
                    continue
                pending += data
                while len(pending) >= 5:
                    kind, length = pending[:1], struct.unpack("!I", pending[1:5])[0]
                    if len(pending) < 1 + length:
                        break
                    sink.sendall(pending[: 1 + length])
                    pending = pending[1 + length:]
                    if kind == b"Z":
                        return  # ready for the first query: from here on, silence
        except OSError:
            return

    def close(self):
        self.listener.close()
        for each in self.sockets:
            each.close()


def test_a_target_that_stalls_mid_session_is_cut_off_at_the_deadline(monkeypatch, target_name):
    monkeypatch.setattr(explain, "DEADLINE_MARGIN_SECONDS", 1)
    proxy = StallingProxy()
    dsn = conninfo.make_conninfo(
        local_dsn(target_name), host="127.0.0.1", port=proxy.port, sslmode="disable"
    )
    try:
        started = time.monotonic()
        with pytest.raises(explain.ExplainFailed) as failed:
            explain.explain(dsn, "SELECT 1", userid=10, timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()

    assert failed.value.transient
    assert 1.4 < elapsed < 5  # the 0.5 s timeout and the 1 s margin, not forever


def test_a_statement_wearing_a_plain_marker_is_still_collected(target, monitored):
    target.execute("/* pganalytics */ SELECT count(*) FROM items WHERE id = %s", [1])
    collect(monitored)

    assert Query.objects.filter(
        database=monitored, text__startswith="/* pganalytics */ SELECT count(*)"
    ).exists()
    assert MonitoredDatabase.objects.get(pk=monitored.pk).last_error == ""


def test_a_type_in_the_role_s_search_path_cannot_slip_code_into_the_plan_procedure(
    target, target_name, monitored, make_role, spill_path
):
    """A domain named json, first in the role's search_path, whose check would run wherever
    the app's procedure resolved or defaulted its json argument outside the procedure."""
    attacker = make_role("domainer")
    name, database = pgsql.Identifier(attacker), pgsql.Identifier(target_name)
    target.execute(pgsql.SQL("CREATE SCHEMA {0} AUTHORIZATION {0}").format(name))
    target.execute(
        pgsql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}, pg_catalog").format(
            name, database, name
        )
    )
    with as_role(target_name, attacker) as connection:
        connection.execute(
            pgsql.SQL(
                "CREATE FUNCTION pwn(x pg_catalog.json) RETURNS boolean LANGUAGE plpgsql AS $$"
                " BEGIN BEGIN RESET ROLE; EXCEPTION WHEN OTHERS THEN RETURN true; END;"
                " EXECUTE format('COPY (SELECT current_user) TO %L', {}); RETURN true; END $$;"
                " CREATE DOMAIN json AS pg_catalog.json CHECK (pwn(VALUE));"
                " CREATE TABLE t3 AS SELECT 1 AS a"
            ).format(spill_path)
        )
        connection.execute("SELECT count(*) FROM t3 WHERE a = %s", [1])
    collect(monitored)
    query = Query.objects.get(database=monitored, text="SELECT count(*) FROM t3 WHERE a = $1")

    plan = services.plan_of(monitored, query, version="v")

    assert plan["status"] == "ok", plan
    assert not os.path.exists(spill_path)
