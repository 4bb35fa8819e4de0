"""The index advisor against the real PostgreSQL with the real hypopg: the right suggestion for
a table that lost its index, verified by a what-if plan; the reason when there is none; no
extension required, nothing read or planned with more privilege than the statement's role,
nothing of its own left in the target's pg_stat_statements, and no name of the target's that
can steer it."""

import io
import json
import os
import time

import psycopg
import pytest
from django.core.management import CommandError, call_command
from psycopg import conninfo
from psycopg import sql as pgsql

from caching import registry
from pganalytics.analytics import advisor, explain, services
from pganalytics.analytics.collector import collect
from pganalytics.models import MonitoredDatabase, PlanSample, Query
from pganalytics.targets import MARKER, local_dsn, reset_statements
from tests.test_explain_privilege import (  # noqa: F401 - server_files is a fixture
    TRAPPED,
    TRAPS,
    read_secret,
    server_files,
    trapped_statement,
)
from tests.test_own_statements import server_statements, watched

ROWS = 50_000
LOOKUP = "SELECT id, total FROM purchases WHERE buyer = %s"
COLLECTED_LOOKUP = "SELECT id, total FROM purchases WHERE buyer = $1"
# Words of what the advisor sends, none of which the workload uses.
ADVISOR_WORDS = (MARKER, "hypopg", "pg_stats", "pg_index", "pganalytics_plan", "EXPLAIN",
                 "READ ONLY", "SET LOCAL", "CREATE EXTENSION")


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


@pytest.fixture(autouse=True)
def hypopg_may_be_created(settings):
    """The advisor may create hypopg here (off by default: a monitored server is not ours)."""
    settings.ADVISOR_CREATE_HYPOPG = True


@pytest.fixture
def purchases(target):
    """A large table of purchases by buyer, analysed, without an index on `buyer`, in a
    database where hypopg is created (as a DBA would: the advisor does not by default)."""
    target.execute(
        "CREATE EXTENSION IF NOT EXISTS hypopg;"
        " DROP TABLE IF EXISTS purchases;"
        " CREATE TABLE purchases (id int PRIMARY KEY, buyer int NOT NULL, total numeric);"
        f" INSERT INTO purchases SELECT n, n % 10000, n % 97 FROM generate_series(1, {ROWS}) n;"
        " ANALYZE purchases"
    )
    yield target
    target.execute("DROP TABLE IF EXISTS purchases")


def without_hypopg(connection):
    connection.execute("DROP EXTENSION IF EXISTS hypopg")


def as_role(target_name, role):
    return psycopg.connect(
        conninfo.make_conninfo(local_dsn(target_name), user=role), autocommit=True
    )


def collected(database, text):
    collect(database)
    return Query.objects.select_related("database").get(database=database, text=text)


def looked_up_under_a_pg_monitor_role(target_name, make_role, *, may_act_as_author):
    """(the collected Query, the application role, the monitor): the lookup run by an
    application role and collected by a `pg_monitor` monitor (not a superuser: it may not
    create hypopg), granted the application role or not."""
    app = make_role("app", "GRANT SELECT ON purchases TO {role}")
    grants = [f'GRANT "{app}" TO {{role}}'] if may_act_as_author else []
    monitor = make_role("monitor", "GRANT pg_monitor TO {role}", *grants)
    database = MonitoredDatabase.objects.create(
        name="limited", dsn=conninfo.make_conninfo(local_dsn(target_name), user=monitor)
    )
    with as_role(target_name, app) as connection:
        connection.execute(LOOKUP, [3])
    return collected(database, COLLECTED_LOOKUP), app, monitor


def test_a_table_that_lost_its_index_gets_it_back_verified_by_a_what_if_plan(
    purchases, monitored
):
    without_hypopg(purchases)  # made by the advisor: the monitoring role is a superuser
    collect(monitored)  # the baseline: the lookups' calls are the next interval's
    for buyer in range(5):
        purchases.execute(LOOKUP, [buyer])
    query = collected(monitored, COLLECTED_LOOKUP)

    found = services.query_suggestions(query)

    assert found["reason"] is None
    (suggestion,) = found["suggestions"]
    assert suggestion["statement"] == 'CREATE INDEX CONCURRENTLY ON "public"."purchases" ("buyer")'
    assert (suggestion["table"], suggestion["columns"]) == ("public.purchases", ["buyer"])
    assert suggestion["verified"] is True
    assert suggestion["cost_after"] * 10 < suggestion["cost_before"]
    assert suggestion["plan_before"] == ["Seq Scan on purchases"]
    assert f"using {advisor.SUGGESTED_INDEX}" in " ".join(suggestion["plan_after"])
    assert suggestion["calls"] == 5
    assert suggestion["estimated_saving"] == pytest.approx(
        (suggestion["cost_before"] - suggestion["cost_after"]) * 5
    )
    indexes = purchases.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'purchases'::regclass"
    ).fetchone()[0]
    assert indexes == 1  # the primary key: the hypothetical index was never built

    optimized = services.optimized_features(query)
    assert optimized["plan_total_cost"] == suggestion["cost_after"]
    assert optimized["plan_seq_scans"] == 0.0
    # the plan the advisor made joined the statement's history, the what-if one did not; the
    # optimized vector weighs the what-if plan against it
    (sample,) = PlanSample.objects.filter(query=query)
    assert (sample.plan_seq_scans, sample.plan_total_cost) == (1.0, suggestion["cost_before"])
    assert optimized["plan_cost_change"] == pytest.approx(
        suggestion["cost_after"] / suggestion["cost_before"])
    (row,) = services.database_suggestions(monitored)
    assert {key: row[key] for key in suggestion} == suggestion


def test_the_query_page_and_its_api_show_the_suggestion_or_why_there_is_none(
    purchases, monitored, viewer_client
):
    purchases.execute(LOOKUP, [1])
    purchases.execute("SELECT count(*) FROM purchases")
    collect(monitored)
    lookup, count = (
        Query.objects.get(database=monitored, text=text)
        for text in (COLLECTED_LOOKUP, "SELECT count(*) FROM purchases")
    )

    api = viewer_client.get(f"/api/v1/databases/{monitored.id}/queries/{lookup.fingerprint}/")
    page = viewer_client.get(f"/databases/{monitored.id}/queries/{lookup.fingerprint}/")
    other = viewer_client.get(f"/databases/{monitored.id}/queries/{count.fingerprint}/")

    (suggestion,) = api.json()["suggestions"]["suggestions"]
    assert suggestion["verified"] and suggestion["columns"] == ["buyer"]
    html = page.content.decode()
    assert "Verified</span> by a what-if plan" in html
    assert "CREATE INDEX CONCURRENTLY ON &quot;public&quot;.&quot;purchases&quot;" in html
    assert "Plan now: Seq Scan on purchases" in html
    after = f"Bitmap Heap Scan on purchases › Bitmap Index Scan using {advisor.SUGGESTED_INDEX}"
    assert f"With the index: {after}" in html
    assert "No suggestion: no predicate on a table column." in other.content.decode()


def test_a_statement_already_served_by_an_index_gets_none_and_says_which(purchases, monitored):
    purchases.execute("CREATE INDEX purchases_by_buyer ON purchases (buyer)")
    purchases.execute(LOOKUP, [1])
    query = collected(monitored, COLLECTED_LOOKUP)

    found = services.query_suggestions(query)

    assert found == {
        "suggestions": [],
        "reason": 'already served by index "purchases_by_buyer"',
        "transient": False,
    }
    assert services.database_suggestions(monitored) == []


def test_a_small_table_gets_none(target, monitored):
    target.execute("ANALYZE items")
    target.execute("SELECT id FROM items WHERE id > %s", [5])
    query = collected(monitored, "SELECT id FROM items WHERE id > $1")

    reason = services.query_suggestions(query)["reason"]

    assert reason == "the table is too small to need an index (100 rows)"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SELECT * FROM purchases p JOIN items i ON i.id = p.id WHERE p.buyer = $1",
         "joins are not handled yet"),
        ("SELECT count(*) FROM purchases", "no predicate on a table column"),
        ("SELECT * FROM purchases WHERE buyer = $1 OR id = $2",
         "conditions joined by OR are not handled yet"),
        ("SELECT * FROM purchases WHERE buyer = (", "the statement does not parse"),
        ("INSERT INTO purchases VALUES ($1, $2, $3)", "only SELECT, UPDATE and DELETE"),
        ("SELECT * FROM purchases WHERE total > $1", "no selective predicate"),
    ],
)
def test_every_statement_without_a_suggestion_says_why(purchases, monitored, text, reason):
    userid = purchases.execute("SELECT oid FROM pg_roles WHERE rolname = current_user").fetchone()
    advice = advisor.advise(monitored.id, monitored.dsn, text, userid=userid[0], version="v")
    assert advice.suggestions == ()
    assert advice.reason.startswith(reason)


def test_a_monitor_that_may_not_create_hypopg_gets_unverified_suggestions(
    db, purchases, target_name, make_role
):
    without_hypopg(purchases)
    query, _, _ = looked_up_under_a_pg_monitor_role(target_name, make_role, may_act_as_author=True)

    found = services.query_suggestions(query)

    (suggestion,) = found["suggestions"]
    assert suggestion["columns"] == ["buyer"]
    assert suggestion["verified"] is False
    assert suggestion["cost_before"] is suggestion["cost_after"] is None
    assert suggestion["estimated_saving"] is None
    assert "may not create it" in suggestion["note"]
    assert not purchases.execute("SELECT FROM pg_extension WHERE extname = 'hypopg'").fetchall()
    assert services.optimized_features(query) is None


def test_column_statistics_are_read_with_the_statement_roles_rights_only(
    purchases, make_role, monitored
):
    """pg_stats hides a table under row security from a reader it applies to: the role's
    statement gets no suggestion from statistics the superuser monitor could read."""
    app = make_role("app", "GRANT SELECT ON purchases TO {role}")
    purchases.execute(
        "ALTER TABLE purchases ENABLE ROW LEVEL SECURITY;"
        " CREATE POLICY everyone ON purchases USING (true)"
    )
    app_oid = purchases.execute("SELECT oid FROM pg_roles WHERE rolname = %s", [app]).fetchone()
    own_oid = purchases.execute(
        "SELECT oid FROM pg_roles WHERE rolname = current_user"
    ).fetchone()

    as_app = advisor.advise(monitored.id, monitored.dsn, COLLECTED_LOOKUP, userid=app_oid[0])
    as_owner = advisor.advise(monitored.id, monitored.dsn, COLLECTED_LOOKUP, userid=own_oid[0])

    assert as_app.suggestions == ()
    assert as_app.reason.startswith("no column statistics the role may read for buyer")
    assert [each.columns for each in as_owner.suggestions] == [("buyer",)]


def test_a_trapped_statement_is_planned_as_its_author_only(
    target, target_name, monitored, make_role, server_files
):
    """The what-if plan folds the author's IMMUTABLE functions as the author: a superuser
    monitor's rights never reach them (tests/test_explain_privilege.py's traps)."""
    secret, spill = server_files
    attacker = make_role("attacker", "GRANT CREATE ON SCHEMA public TO {role}")
    with as_role(target_name, attacker) as connection:
        large_object = connection.execute("SELECT lo_from_bytea(0, 'spilled')").fetchone()[0]
        connection.execute(
            pgsql.SQL(TRAPS).format(
                secret=secret, spill=spill, large_object=pgsql.Literal(large_object)
            )
        )
        connection.execute(
            f"INSERT INTO loot SELECT 'v' || n FROM generate_series(1, {ROWS}) n; ANALYZE loot"
        )
        for trap in TRAPPED:
            connection.execute(trapped_statement(trap))
    collect(monitored)

    for trap in TRAPPED:
        query = Query.objects.select_related("database").get(
            database=monitored, text=trapped_statement(trap)
        )
        found = services.query_suggestions(query)
        (suggestion,) = found["suggestions"]
        assert suggestion["verified"], found
        advice = advisor.cached_advice(monitored.id, monitored.dsn, query.text, userid=query.userid)
        assert advice.suggestions[0].whatif_plan[0]["Plan"]["Index Cond"] == (
            "(loot.v = 'denied'::text)"
        )
        assert read_secret(server_files) not in repr(advice)
    assert not os.path.exists(spill)  # lo_export never wrote the file


@pytest.mark.parametrize("monitoring", ["superuser", "pg_monitor"])
def test_nothing_the_advisor_runs_shows_as_the_targets_workload(
    db, purchases, target_name, make_role, monitoring
):
    purchases.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    reset_statements(purchases)
    app = make_role("app", "GRANT SELECT ON purchases TO {role}")
    database = watched(target_name, make_role, monitoring, app)
    with as_role(target_name, app) as connection:
        for buyer in range(3):
            connection.execute(LOOKUP, [buyer])
    query = collected(database, COLLECTED_LOOKUP)

    assert services.query_suggestions(query)["suggestions"][0]["verified"]
    snapshot = collect(database)

    texts = list(Query.objects.filter(database=database).values_list("text", flat=True))
    assert not [text for text in texts if any(word in text for word in ADVISOR_WORDS)], texts
    assert not snapshot.stats.exclude(query__text=COLLECTED_LOOKUP).filter(
        delta_calls__gt=0
    ).exists()
    on_the_server = server_statements(target_name)
    assert on_the_server[COLLECTED_LOOKUP] == 3
    ours = [text for text in on_the_server if any(word in text for word in ADVISOR_WORDS)]
    if monitoring == "superuser":
        assert ours == []
    else:
        assert ours and all(text.startswith(MARKER) for text in ours), ours


def test_a_hostile_table_or_column_name_cannot_steer_the_advisor(target, monitored):
    table, column = 'x"; DROP TABLE canary; --', 'c") ; DROP TABLE canary; --'
    names = {"table": pgsql.Identifier(table), "column": pgsql.Identifier(column)}
    target.execute("CREATE TABLE IF NOT EXISTS canary (id int)")
    target.execute(pgsql.SQL(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({column} int, other int);"
        f" INSERT INTO {{table}} SELECT n, n FROM generate_series(1, {ROWS}) n;"
        " ANALYZE {table}"
    ).format(**names))
    lookup = pgsql.SQL("SELECT other FROM {table} WHERE {column} = %s").format(**names)
    target.execute(lookup, [7])
    collect(monitored)
    query = Query.objects.select_related("database").get(
        database=monitored, text=lookup.as_string(target).replace("%s", "$1")
    )

    (suggestion,) = services.query_suggestions(query)["suggestions"]

    assert suggestion["verified"]
    assert suggestion["columns"] == [column]
    assert suggestion["statement"] == (
        f'CREATE INDEX CONCURRENTLY ON "public".{names["table"].as_string(target)}'
        f' ({names["column"].as_string(target)})'
    )
    assert target.execute("SELECT to_regclass('canary')").fetchone()[0] == "canary"
    target.execute(pgsql.SQL("DROP TABLE {table}").format(**names))


def test_advice_is_kept_per_data_version_and_follows_a_new_index(purchases, monitored):
    purchases.execute(LOOKUP, [1])
    query = collected(monitored, COLLECTED_LOOKUP)
    assert services.query_suggestions(query)["suggestions"]
    purchases.execute("CREATE INDEX purchases_by_buyer ON purchases (buyer)")

    assert services.query_suggestions(query)["suggestions"]  # the same version: kept
    collect(monitored)  # a new snapshot, a new version: advised anew

    assert services.query_suggestions(query)["reason"] == (
        'already served by index "purchases_by_buyer"'
    )


def test_a_transient_failure_is_kept_briefly(monkeypatch, silent_server):
    monkeypatch.setattr(explain, "TRANSIENT_FAILURE_SECONDS", 1)
    hung = f"host=127.0.0.1 port={silent_server.port} dbname=x sslmode=disable connect_timeout=1"
    for _ in range(2):
        advice = advisor.cached_advice(1, hung, COLLECTED_LOOKUP, userid=1, version="v")
        assert advice.transient and advice.reason.startswith("failed: ")
    assert len(silent_server.accepted) == 1  # the second view waited for nothing
    time.sleep(1.2)
    advisor.cached_advice(1, hung, COLLECTED_LOOKUP, userid=1, version="v")
    assert len(silent_server.accepted) == 2


def test_hypopg_is_never_created_when_the_setting_says_so(settings, purchases, monitored):
    settings.ADVISOR_CREATE_HYPOPG = False
    without_hypopg(purchases)
    purchases.execute(LOOKUP, [1])
    query = collected(monitored, COLLECTED_LOOKUP)

    (suggestion,) = services.query_suggestions(query)["suggestions"]

    assert not suggestion["verified"]
    assert suggestion["note"] == "hypopg is not created in this database (CREATE EXTENSION hypopg)"
    assert not purchases.execute("SELECT FROM pg_extension WHERE extname = 'hypopg'").fetchall()


def test_the_advise_command_ranks_the_suggestions_of_a_database(purchases, monitored):
    collect(monitored)  # the baseline: the top statements are the next interval's
    purchases.execute(LOOKUP, [1])
    collect(monitored)
    out = io.StringIO()

    call_command("advise", "--database", monitored.name, "--json", stdout=out)

    document = json.loads(out.getvalue())
    assert document["database"] == monitored.name
    assert [row["columns"] for row in document["suggestions"]] == [["buyer"]]
    with pytest.raises(CommandError, match="no monitored database named 'nope'"):
        call_command("advise", "--database", "nope")


def test_a_suggestion_the_what_if_plan_refutes_is_dropped_with_the_reason(purchases, monitored):
    """An index of the column's collation cannot serve a comparison in another one: the
    statistics promise a selective lookup, the planner with the hypothetical index says no."""
    purchases.execute(
        "ALTER TABLE purchases ADD COLUMN code text; UPDATE purchases SET code = 'c' || id;"
        " ANALYZE purchases"
    )
    text = 'SELECT id FROM purchases WHERE code = $1 COLLATE "POSIX"'
    userid = purchases.execute("SELECT oid FROM pg_roles WHERE rolname = current_user").fetchone()

    advice = advisor.advise(monitored.id, monitored.dsn, text, userid=userid[0], version="v")

    assert advice.suggestions == ()
    assert advice.reason.startswith(
        'checked with hypopg: the planner would not use an index on "code" (cost '
    )


def test_a_monitor_that_may_not_act_as_the_author_gets_the_explains_refusal(
    db, purchases, target_name, make_role
):
    query, app, monitor = looked_up_under_a_pg_monitor_role(
        target_name, make_role, may_act_as_author=False
    )

    found = services.query_suggestions(query)

    assert found["suggestions"] == []
    assert found["reason"].startswith("refused: it is planned only as the role that ran it")
    assert f'GRANT "{app}" TO "{monitor}"' in found["reason"]


def test_the_database_round_stops_at_a_target_that_does_not_answer(
    purchases, monitored, silent_server
):
    collect(monitored)
    for statement in (LOOKUP, "SELECT total FROM purchases WHERE id = %s",
                      "SELECT id FROM purchases WHERE total = %s"):
        purchases.execute(statement, [1])
    collect(monitored)
    monitored.dsn = (
        f"host=127.0.0.1 port={silent_server.port} dbname=x sslmode=disable connect_timeout=1"
    )
    monitored.save()

    assert services.database_suggestions(monitored) == []

    assert len(silent_server.accepted) == 1  # one wait, not one per statement
