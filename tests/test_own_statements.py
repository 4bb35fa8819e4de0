"""What the app runs on a monitored server (collection, EXPLAIN) is not that server's
workload: it never shows as the target's statements and never adds to the workload's own
BEGIN, ROLLBACK or queries, whether the monitoring role may turn pg_stat_statements off for
its sessions (a superuser) or not (pg_monitor only: its statements are marked and left out)."""

import psycopg
import pytest
from psycopg import conninfo

from caching import registry
from pganalytics.analytics import services
from pganalytics.analytics.collector import collect
from pganalytics.models import MonitoredDatabase, Query, QueryStat
from pganalytics.targets import MARKER, local_dsn

LOOKUP = "SELECT count(*) FROM items WHERE id = %s"
OWN_LOOKUP = "SELECT count(*) FROM items WHERE id > %s"
TRANSACTIONS = 3
# Words of what the collector and EXPLAIN send, none of which the workload below uses.
APP_WORDS = (MARKER, "pganalytics_explain", "pganalytics_plan", "EXPLAIN",
             "pg_stat_statements_info", "pg_extension", "reltuples", "READ ONLY", "set_config",
             "pg_temp", "SET LOCAL")


def server_statements(target_name):
    """{text: calls} of the target database's top-level pg_stat_statements entries."""
    with psycopg.connect(local_dsn(target_name), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT query, sum(calls)::int FROM pg_stat_statements WHERE toplevel AND dbid ="
            " (SELECT oid FROM pg_database WHERE datname = current_database()) GROUP BY query"
        ).fetchall()
    return dict(rows)


def watched(target_name, make_role, monitoring, app):
    """The target monitored as a superuser, or as a `pg_monitor` role granted `app` (so it may
    plan `app`'s statements as `app`)."""
    if monitoring == "superuser":
        dsn = local_dsn(target_name)
    else:
        monitor = make_role("monitor", "GRANT pg_monitor TO {role}", f'GRANT "{app}" TO {{role}}')
        dsn = conninfo.make_conninfo(local_dsn(target_name), user=monitor)
    return MonitoredDatabase.objects.create(name="watched", dsn=dsn)


@pytest.mark.parametrize("monitoring", ["superuser", "pg_monitor"])
def test_collecting_and_planning_leave_the_workload_as_it_was(
    db, target, target_name, make_role, monitoring
):
    registry.clear_all()
    app = make_role("app", "GRANT SELECT ON items TO {role}")
    database = watched(target_name, make_role, monitoring, app)
    with psycopg.connect(conninfo.make_conninfo(local_dsn(target_name), user=app)) as workload:
        for number in range(TRANSACTIONS):
            workload.execute(LOOKUP, [number])  # BEGIN, the lookup ...
            workload.rollback()  # ... ROLLBACK
    target.execute(OWN_LOOKUP, [1])  # run by the monitoring role itself in the superuser case

    collect(database)
    for query in Query.objects.filter(database=database):
        services.plan_of(database, query, version="first")
    snapshot = collect(database)
    for query in Query.objects.filter(database=database):
        services.plan_of(database, query, version="second")

    lookup = Query.objects.get(database=database, text="SELECT count(*) FROM items WHERE id = $1")
    assert services.plan_of(database, lookup, version="second")["status"] == "ok"
    texts = list(Query.objects.filter(database=database).values_list("text", flat=True))
    assert not [text for text in texts if any(word in text for word in APP_WORDS)], texts
    for statement in ("BEGIN", "ROLLBACK"):
        query = Query.objects.get(database=database, text=statement)
        assert query.last_calls == TRANSACTIONS  # the app's added nothing: it did not move
        assert not QueryStat.objects.filter(snapshot=snapshot, query=query).exists()

    on_the_server = server_statements(target_name)
    assert on_the_server["BEGIN"] == on_the_server["ROLLBACK"] == TRANSACTIONS
    assert on_the_server["SELECT count(*) FROM items WHERE id = $1"] == TRANSACTIONS
    ours = [text for text in on_the_server if any(word in text for word in APP_WORDS)]
    if monitoring == "superuser":
        assert ours == []  # its sessions are untracked: no trace at all
    else:
        assert ours and all(text.startswith(MARKER) for text in ours), ours
