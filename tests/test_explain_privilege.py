"""EXPLAIN on a monitored server never runs anything with more privilege than the role that
ran the statement: the planner folds IMMUTABLE functions, so a role that can get a statement
collected could otherwise read or write server files as the monitoring role. Also: the
database list says when a DSN connects as a superuser, and plans follow the schema."""

import os
import re
import tempfile
import time
import uuid

import psycopg
import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from psycopg import conninfo

from caching import registry
from pganalytics.analytics import explain, services
from pganalytics.analytics.collector import collect
from pganalytics.models import MonitoredDatabase, Query
from pganalytics.targets import local_dsn

# A low-privileged role's traps: harmless when it runs them itself (its own planner folds
# them, as itself, into 'denied'), a file read or written when planned as a superuser.
TRAPS = """
CREATE TABLE loot (v text);
CREATE FUNCTION steal() RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN RETURN pg_read_file({secret});
EXCEPTION WHEN insufficient_privilege THEN RETURN 'denied'; END $$;
CREATE FUNCTION spill() RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN PERFORM lo_export({large_object}, {spill}); RETURN 'written';
EXCEPTION WHEN insufficient_privilege THEN RETURN 'denied'; END $$;
CREATE FUNCTION escape() RETURNS text IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  BEGIN PERFORM set_config('role', 'none', true);
  EXCEPTION WHEN insufficient_privilege THEN NULL; END;
  RETURN steal();
END $$;
"""
TRAPPED = ["steal", "spill", "escape"]


def trapped_statement(trap):
    return f"SELECT * FROM loot WHERE v = {trap}()"


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture
def server_files():
    """(secret, spill): a file only the server's superuser may read, holding a random secret,
    and the path a superuser's lo_export would write to."""
    with tempfile.NamedTemporaryFile("w", prefix="pganalytics_secret_", delete=False) as secret:
        secret.write(uuid.uuid4().hex)
    os.chmod(secret.name, 0o644)  # readable by the server's OS user
    spill = f"{tempfile.gettempdir()}/pganalytics_spill_{uuid.uuid4().hex}"
    yield secret.name, spill
    for path in (secret.name, spill):
        if os.path.exists(path):
            os.unlink(path)


@pytest.fixture
def attacker(target_name, make_role, server_files):
    """A low-privileged role that has run its three trapped statements on the target."""
    role = make_role("attacker", "GRANT CREATE ON SCHEMA public TO {role}")
    secret, spill = server_files
    dsn = conninfo.make_conninfo(local_dsn(target_name), user=role)
    with psycopg.connect(dsn, autocommit=True) as connection:
        large_object = connection.execute("SELECT lo_from_bytea(0, 'spilled')").fetchone()[0]
        connection.execute(
            psycopg.sql.SQL(TRAPS).format(
                secret=secret, spill=spill, large_object=psycopg.sql.Literal(large_object)
            )
        )
        for trap in TRAPPED:
            connection.execute(trapped_statement(trap))
    return role


def read_secret(server_files):
    with open(server_files[0]) as secret:
        return secret.read()


def plan_of(database, trap):
    query = Query.objects.get(database=database, text=trapped_statement(trap))
    return services.plan_of(database, query, version="test")


def test_a_trap_planned_by_a_superuser_monitor_runs_as_its_author_only(
    target, monitored, attacker, server_files
):
    collect(monitored)

    for trap in TRAPPED:
        plan = plan_of(monitored, trap)
        assert plan["status"] == "ok", plan
        assert plan["raw"][0]["Plan"]["Filter"] == "(loot.v = 'denied'::text)"
        assert read_secret(server_files) not in repr(plan)
    assert not os.path.exists(server_files[1])  # lo_export never wrote the file


def test_a_monitor_that_may_not_act_as_the_author_is_refused_with_the_grant_to_give(
    target, target_name, attacker, make_role, admin_client, server_files
):
    monitor = make_role("monitor", "GRANT pg_monitor TO {role}")
    database = MonitoredDatabase.objects.create(
        name="monitor", dsn=conninfo.make_conninfo(local_dsn(target_name), user=monitor)
    )
    collect(database)

    plan = plan_of(database, "steal")
    assert plan["status"] == "refused"
    assert f'GRANT "{attacker}" TO "{monitor}"' in plan["reason"]
    query = Query.objects.get(database=database, text=trapped_statement("steal"))
    page = admin_client.get(f"/databases/{database.id}/queries/{query.fingerprint}/")
    assert f"GRANT &quot;{attacker}&quot; TO &quot;{monitor}&quot;" in page.content.decode()

    with psycopg.connect(local_dsn(target_name), autocommit=True) as grant:
        grant.execute(f'GRANT "{attacker}" TO "{monitor}"')
    registry.clear_all()
    for trap in TRAPPED:
        plan = plan_of(database, trap)
        assert plan["status"] == "ok", plan
        assert plan["raw"][0]["Plan"]["Filter"] == "(loot.v = 'denied'::text)"
    assert not os.path.exists(server_files[1])


def test_the_database_list_says_when_a_dsn_connects_as_a_superuser(
    target, target_name, monitored, make_role, admin_client
):
    monitor = make_role("monitor", "GRANT pg_monitor TO {role}")
    limited = MonitoredDatabase.objects.create(
        name="monitor", dsn=conninfo.make_conninfo(local_dsn(target_name), user=monitor)
    )
    assert monitored.connects_as_superuser is None
    collect(monitored)
    collect(limited)

    staff = User(is_staff=True)
    listed = {each.name: services.database_summary(each, staff) for each in services.databases()}
    assert listed["target"]["connects_as_superuser"] is True
    assert listed["monitor"]["connects_as_superuser"] is False
    page = admin_client.get("/").content.decode()
    assert page.count("connects as a superuser") == 1


def test_a_new_snapshot_after_a_dropped_index_shows_the_new_plan_and_its_age(
    target, monitored, admin_client
):
    target.execute(
        "CREATE TABLE parts AS SELECT n AS id, n % 50 AS kind FROM generate_series(1, 20000) n;"
        " CREATE INDEX parts_id ON parts (id); ANALYZE parts"
    )
    lookup = "SELECT kind FROM parts WHERE id = %s"
    for number in range(3):
        target.execute(lookup, [number])
    collect(monitored)
    query = Query.objects.get(database=monitored, text="SELECT kind FROM parts WHERE id = $1")

    before = services.query_detail(monitored, query.fingerprint)["plan"]
    assert before["summary"]["top_node"] == "Index Scan"
    assert services.query_detail(monitored, query.fingerprint)["plan"] == before  # cached
    target.execute("DROP INDEX parts_id")
    collect(monitored)

    detail = services.query_detail(monitored, query.fingerprint)
    assert detail["plan"]["summary"]["top_node"] == "Seq Scan"
    assert detail["plan"]["planned_at"] > before["planned_at"]
    assert detail["features"]["plan_seq_scans"] == 1.0
    page = admin_client.get(f"/databases/{monitored.id}/queries/{query.fingerprint}/")
    role = target.info.user
    planned = rf"Planned (now|\d+.seconds? ago) \(.+ UTC\) as {role}, the role"
    assert re.search(planned, page.content.decode())


def test_a_transient_failure_is_kept_briefly_and_a_lasting_one_like_a_plan(
    monkeypatch, silent_server, target, monitored
):
    monkeypatch.setattr(explain, "TRANSIENT_FAILURE_SECONDS", 1)
    hung = f"host=127.0.0.1 port={silent_server.port} dbname=x sslmode=disable connect_timeout=1"
    for _ in range(2):
        with pytest.raises(explain.ExplainFailed) as failed:
            explain.cached_explain(1, hung, "SELECT 1", userid=1, version="v")
        assert failed.value.transient
    assert len(silent_server.accepted) == 1  # the second view waited for nothing

    target.execute("SELECT 1")
    collect(monitored)
    query = Query.objects.get(database=monitored, text="SELECT $1")
    lasting = explain.explain_key(monitored.id, monitored.dsn, "SELECT $1 + $2")
    with pytest.raises(explain.ExplainFailed) as failed:
        explain.cached_explain(
            monitored.id, monitored.dsn, "SELECT $1 + $2", userid=query.userid, version="v"
        )
    assert not failed.value.transient

    time.sleep(1.2)
    with pytest.raises(explain.ExplainFailed):
        explain.cached_explain(1, hung, "SELECT 1", userid=1, version="v")
    assert len(silent_server.accepted) == 2  # tried again once the short TTL ran out
    assert not caches["explain"].get(lasting, version="v").transient  # still kept


def test_a_query_collected_before_roles_were_recorded_gets_its_role_at_the_next_snapshot(
    target, monitored
):
    target.execute("SELECT 1")
    collect(monitored)
    query = Query.objects.get(database=monitored, text="SELECT $1")
    Query.objects.filter(pk=query.pk).update(userid=None, text="SELECT $1 ")
    query.refresh_from_db()
    assert services.plan_of(monitored, query, version="old")["reason"].startswith(
        "the role that ran it is not known yet"
    )

    target.execute("SELECT 2")
    collect(monitored)

    query.refresh_from_db()
    assert (query.text, query.userid) == ("SELECT $1", target.execute(
        "SELECT oid FROM pg_roles WHERE rolname = current_user"
    ).fetchone()[0])
    assert services.plan_of(monitored, query, version="new")["status"] == "ok"
