"""Safe EXPLAIN against the real test database: planned, never executed, never written."""

import os
import re

import psycopg
import pytest
from django.core.cache import caches
from django.db import connection
from django.utils import timezone
from django.views.debug import ExceptionReporter
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from pganalytics.analytics.explain import (
    ExplainFailed,
    ExplainRefused,
    ParsedStatement,
    _plan,
    cached_explain,
    explain,
    explain_key,
    parse_statement,
    plan_nodes,
    summarize,
)
from pganalytics.fingerprint import fingerprint
from pganalytics.models import MonitoredDatabase, PlanSample, Query
from pganalytics.targets import drop_database, ensure_database, local_dsn

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dsn():
    """A DSN of the test database, with a committed 20,000-row table and a side-effect trap.

    `bump()` claims to be IMMUTABLE, so the planner folds a call of it, which would advance
    the sequence (sequences ignore rollback) were the transaction not READ ONLY.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TABLE explain_orders (id int PRIMARY KEY, customer int, total numeric);
            INSERT INTO explain_orders SELECT n, n % 100, n FROM generate_series(1, 20000) n;
            ANALYZE explain_orders;
            CREATE SEQUENCE explain_side_effects;
            CREATE FUNCTION explain_bump() RETURNS bigint IMMUTABLE LANGUAGE plpgsql
                AS $$ BEGIN RETURN nextval('explain_side_effects'); END $$;
            CREATE FUNCTION explain_sleep() RETURNS int IMMUTABLE LANGUAGE sql
                AS $$ SELECT 1 FROM pg_sleep(5) $$;
            """
        )
    settings = connection.settings_dict
    parts = {"dbname": settings["NAME"], "user": settings["USER"], "password": settings["PASSWORD"],
             "host": settings["HOST"], "port": settings["PORT"]}
    yield make_conninfo(**{name: str(value) for name, value in parts.items() if value})
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TABLE explain_orders; DROP SEQUENCE explain_side_effects;"
            " DROP FUNCTION explain_bump(), explain_sleep();"
        )


@pytest.fixture
def lax_quoting_dsn():
    """A DSN of a scratch database whose sessions read a backslash in '...' as an escape
    (`standard_conforming_strings = off`, unlike pglast), with a 10-row table."""
    name = f"explain_lax_quoting_{os.getpid()}"
    ensure_database(name)
    dsn = local_dsn(name)
    with psycopg.connect(dsn, autocommit=True) as target:
        target.execute(
            pgsql.SQL("ALTER DATABASE {} SET standard_conforming_strings = off").format(
                pgsql.Identifier(name)
            )
        )
        target.execute("CREATE TABLE victims AS SELECT generate_series(1, 10) AS id")
    yield dsn
    drop_database(name)


def scalar(sql):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def own_role():
    """OID of the role the tests connect as: the role that runs the statements they plan."""
    return scalar("SELECT oid FROM pg_roles WHERE rolname = current_user")


def nested_not(depth):
    return "SELECT * FROM explain_orders WHERE " + "NOT (" * depth + "id = $1" + ")" * depth


def test_select_plan_reports_a_seq_scan_of_a_large_table(dsn):
    result = explain(dsn, "SELECT * FROM explain_orders WHERE total > 19990", userid=own_role())
    summary = result.summary
    assert not result.generic
    assert result.plan_json[0]["Plan"]["Node Type"] == "Seq Scan"
    assert summary.top_node == "Seq Scan" and summary.node_types == {"Seq Scan": 1}
    (scan,) = summary.seq_scans
    assert scan.relation == "explain_orders" and scan.table_rows == 20000
    assert scan.estimated_rows < 100 and scan.large  # few rows out, all 20,000 read
    assert summary.total_cost > 0 and summary.estimated_rows == scan.estimated_rows
    assert not [key for node in plan_nodes(result.plan_json) for key in node if "Actual" in key]


def test_parameterised_statement_gets_a_generic_plan(dsn):
    result = explain(
        dsn, "SELECT customer, count(*) FROM explain_orders WHERE id = $1 GROUP BY 1",
        userid=own_role(),
    )
    assert result.generic
    assert "Index Scan" in result.summary.node_types
    assert result.summary.seq_scans == []


@pytest.mark.parametrize(
    "sql, reason",
    [
        ("CREATE TABLE explain_other (a int)", "CREATE is a utility or DDL statement (CreateStmt)"),
        ("DROP TABLE explain_orders", "DROP is a utility or DDL statement (DropStmt)"),
        ("VACUUM explain_orders", "VACUUM is a utility or DDL statement (VacuumStmt)"),
        ("SELECT 1; DELETE FROM explain_orders", "expected one statement, found 2"),
        ("SELECT * INTO explain_copy FROM explain_orders", "SELECT INTO creates a table"),
        ("SELEKT 1", "does not parse"),
    ],
)
def test_utility_ddl_and_multiple_statements_are_refused_with_a_reason(dsn, sql, reason):
    with pytest.raises(ExplainRefused) as refused:
        explain(dsn, sql, userid=own_role())
    assert reason in refused.value.reason
    assert scalar("SELECT count(*) FROM explain_orders") == 20000


def test_explain_of_insert_update_delete_changes_nothing(dsn):
    for sql in [
        "INSERT INTO explain_orders VALUES (20001, 1, 1)",
        "UPDATE explain_orders SET total = 0",
        "DELETE FROM explain_orders WHERE id = $1",
    ]:
        explain(dsn, sql, userid=own_role())
    assert scalar("SELECT count(*) FROM explain_orders") == 20000
    assert scalar("SELECT count(*) FROM explain_orders WHERE total = 0") == 0


def test_backslash_quoting_of_the_target_cannot_smuggle_statements_past_the_check(
    lax_quoting_dsn,
):
    """pglast reads one SELECT; with backslash escapes the server would read the second
    string literal as code: COMMIT (ending READ ONLY), then DELETE."""
    with psycopg.connect(lax_quoting_dsn) as target:
        assert target.execute("SHOW standard_conforming_strings").fetchone()[0] == "off"
    smuggling = (
        "SELECT * FROM XMLTABLE('/r' PASSING CAST('<r/>' AS xml) COLUMNS a text PATH 'p'"
        r" DEFAULT '\' || ') ; COMMIT; DELETE FROM victims; --')"
    )
    result = explain(lax_quoting_dsn, smuggling, userid=own_role())
    assert result.summary.node_types == {"Table Function Scan": 1}  # pglast's one SELECT
    with psycopg.connect(lax_quoting_dsn) as target:
        assert target.execute("SELECT count(*) FROM victims").fetchone()[0] == 10


@pytest.mark.parametrize(
    "text, parameters",
    [
        ("SELECT 1; DELETE FROM explain_orders", 0),
        ("SELECT $1::int; DELETE FROM explain_orders", 1),  # the PREPARE path
    ],
)
def test_the_server_refuses_a_text_of_two_statements(dsn, text, parameters):
    """The second line, should the parser ever be fooled: the extended query protocol."""
    with (
        pytest.raises(psycopg.errors.SyntaxError, match="cannot insert multiple commands"),
        psycopg.connect(dsn) as target,
    ):
        _plan(target, ParsedStatement(text, parameters), own_role())
    assert scalar("SELECT count(*) FROM explain_orders") == 20000


def test_deeply_nested_statement_is_planned(dsn):
    # deeper than a recursive walk of its tree goes
    result = explain(dsn, nested_not(200), userid=own_role())
    assert result.generic and result.summary.top_node


def test_statement_nested_too_deeply_to_read_is_refused_or_fails_cleanly():
    """Python 3.11's json decoder gives up on such a tree (refused); later versions read it,
    and the (here unreachable) server is asked: either way an answer, never a crash."""
    with pytest.raises((ExplainRefused, ExplainFailed), match="nests too deeply|port 1"):
        cached_explain(1, "host=127.0.0.1 port=1", nested_not(1000), userid=own_role())


def test_folded_function_with_side_effects_is_stopped_by_read_only(dsn):
    with pytest.raises(ExplainFailed, match="read-only transaction"):
        explain(dsn, "SELECT * FROM explain_orders WHERE id = explain_bump()", userid=own_role())
    assert scalar("SELECT last_value FROM explain_side_effects") == 1
    assert scalar("SELECT is_called FROM explain_side_effects") is False


def test_statement_timeout_bounds_planning(dsn):
    with pytest.raises(ExplainFailed, match="statement timeout"):
        explain(
            dsn, "SELECT * FROM explain_orders WHERE id = explain_sleep()", timeout=0.2,
            userid=own_role(),
        )


def test_untyped_parameters_fail_with_postgres_message(dsn):
    with pytest.raises(ExplainFailed, match="operator is not unique"):
        explain(dsn, "SELECT $1 + $2", userid=own_role())


def test_unreachable_server_fails_cleanly():
    with pytest.raises(ExplainFailed):
        explain("host=127.0.0.1 port=1 dbname=none", "SELECT 1", userid=own_role())


def test_failure_message_never_quotes_the_password():
    """libpq ends the password at the first `@`: the host it fails to resolve is `ss-word@...`."""
    with pytest.raises(ExplainFailed) as failed:
        explain("postgresql://monitor:pa@ss-word@127.0.0.1:1/app", "SELECT 1", userid=own_role())
    assert "127.0.0.1" in str(failed.value) and "ss-word" not in str(failed.value)
    assert failed.value.__cause__ is None  # psycopg's unscrubbed error does not travel along


def test_an_unexpected_error_reports_no_dsn():
    """Error reports (500 e-mails, logs) list each frame's locals: the DSN's are hidden."""
    caches["explain"].clear()
    with pytest.raises(ValueError) as raised:
        cached_explain(
            1, "host=127.0.0.1 password=reported-secret", "SELECT 1", timeout="soon",
            userid=own_role(),
        )
    frames = ExceptionReporter(None, raised.type, raised.value, raised.tb).get_traceback_frames()
    below_the_test = [frame for frame in frames if frame["filename"] != __file__]
    assert "explain" in [frame["function"] for frame in below_the_test]
    assert "reported-secret" not in repr([frame["vars"] for frame in below_the_test])


def test_statement_text_is_cut_to_the_one_statement():
    statement = parse_statement("  SELECT 'é' , $2 FROM t WHERE a = $1 ;  -- trailing\n")
    assert statement.text == "SELECT 'é' , $2 FROM t WHERE a = $1"
    assert statement.parameter_count == 2


def test_summary_of_nested_plan_counts_node_types():
    plan = [{"Plan": {
        "Node Type": "Hash Join", "Total Cost": 50.0, "Plan Rows": 10,
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "a", "Plan Rows": 5, "Total Cost": 1},
            {"Node Type": "Hash", "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "b", "Plan Rows": 50000},
            ]},
        ],
    }}]
    summary = summarize(plan, table_rows={"a": 100})
    assert summary.top_node == "Hash Join" and summary.total_cost == 50.0
    assert summary.node_types == {"Seq Scan": 2, "Hash Join": 1, "Hash": 1}
    assert [(s.relation, s.large) for s in summary.seq_scans] == [("a", False), ("b", True)]
    assert [s.relation for s in summary.large_seq_scans] == ["b"]


def test_cached_explain_plans_once_and_caches_refusals(dsn):
    cache = caches["explain"]
    cache.clear()
    first = cached_explain(1, dsn, "SELECT * FROM explain_orders WHERE id = 5", userid=own_role())
    hits = cache.metrics()["hits"]
    # the same fingerprint
    again = cached_explain(1, dsn, "SELECT * FROM explain_orders WHERE id = 7", userid=own_role())
    assert again == first and cache.metrics()["hits"] == hits + 1
    for _ in range(2):
        with pytest.raises(ExplainRefused):
            cached_explain(1, dsn, "VACUUM explain_orders", userid=own_role())
    assert cache.has_key(explain_key(1, dsn, "VACUUM explain_orders"))


def test_a_fresh_plan_of_a_collected_statement_joins_its_history_once(dsn):
    caches["explain"].clear()
    text = "SELECT * FROM explain_orders WHERE customer = $1"
    database = MonitoredDatabase.objects.create(name="planned", dsn=dsn)
    now = timezone.now()
    query = Query.objects.create(
        database=database, fingerprint=fingerprint(text).fingerprint, text=text,
        normalized=text, parsed=True, userid=own_role(), first_seen=now, last_seen=now)

    first = cached_explain(database.id, dsn, text, userid=own_role(), version="1")
    cached_explain(database.id, dsn, text, userid=own_role(), version="1")  # from the cache
    cached_explain(database.id + 1, dsn, text, userid=own_role(), version="1")  # not collected

    samples = PlanSample.objects.filter(query=query)
    assert list(samples.values_list(
        "taken_at", "plan_seq_scans", "plan_total_cost", "plan_rows")) == [
        (first.planned_at, 1.0, first.summary.total_cost, first.summary.estimated_rows)]
    assert PlanSample.objects.count() == 1
    cached_explain(database.id, dsn, text, userid=own_role(), version="2")  # a new snapshot
    assert samples.count() == 2
    database.delete()
    assert not PlanSample.objects.exists()


def test_explain_key_names_the_server_by_a_hash_of_its_dsn(dsn):
    key = explain_key(1, dsn, "SELECT 1")
    assert re.fullmatch(rf"explain:1:[0-9a-f]{{16}}:{fingerprint('SELECT 1').fingerprint}", key)
    assert explain_key(1, dsn + " application_name=x", "SELECT 1") != key


def test_after_a_dsn_edit_the_old_servers_plan_is_not_served(dsn):
    caches["explain"].clear()
    cached_explain(1, dsn, "SELECT * FROM explain_orders WHERE id = 5", userid=own_role())
    with pytest.raises(ExplainFailed):  # explained afresh, on the (unreachable) new server
        cached_explain(
            1, "host=127.0.0.1 port=1", "SELECT * FROM explain_orders WHERE id = 5",
            userid=own_role(),
        )
