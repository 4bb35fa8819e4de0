"""The demo against the real local server: snapshots, a regression and a call-rate jump."""

import io
import os

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from psycopg import conninfo

from mlservice.models import ModelVersion
from pganalytics.demo import CUSTOMER_BY_EMAIL, DEMO_NAME, ORDERS_OF_CUSTOMER, run_demo
from pganalytics.models import MonitoredDatabase, PlanSample, Query, QueryStat
from pganalytics.targets import drop_database
from tests.mlservice_process import Service

SNAPSHOTS = 5


@pytest.fixture
def demo_dbname():
    name = f"pganalytics_demo_{os.environ.get('PYTEST_DB_SUFFIX', 'main')}_{os.getpid()}"
    yield name
    drop_database(name)


def intervals_of(database, statement):
    """(delta_calls, delta_mean_exec_time) of `statement` per snapshot, oldest first."""
    prefix = statement.split("%s")[0]
    return list(
        QueryStat.objects.filter(snapshot__database=database, query__text__startswith=prefix)
        .order_by("snapshot__taken_at")
        .values_list("delta_calls", "delta_mean_exec_time")
    )


@pytest.mark.django_db(transaction=True)
def test_the_demo_collects_snapshots_with_a_regression_and_a_call_rate_jump(demo_dbname):
    lines = []
    run_demo(snapshots=SNAPSHOTS, scale=0.1, dbname=demo_dbname, report=lines.append)
    database = run_demo(snapshots=SNAPSHOTS, scale=0.1, dbname=demo_dbname, report=lines.append)

    assert database.name == DEMO_NAME and MonitoredDatabase.objects.count() == 1
    assert database.snapshots.count() == SNAPSHOTS  # the second run started over
    orders = intervals_of(database, ORDERS_OF_CUSTOMER)
    emails = intervals_of(database, CUSTOMER_BY_EMAIL)
    assert orders[0] == (None, None) and emails[0] == (None, None)  # first snapshot
    assert [calls for calls, _ in emails[1:]] == [30, 30, 600, 600]
    indexed, scanning = orders[1][1], orders[-1][1]
    assert scanning > 5 * indexed
    assert not database.snapshots.filter(reset_detected=True).exists()
    costs = list(  # planned after each snapshot, as its page would: kept before and after
        PlanSample.objects.filter(query__text__startswith=ORDERS_OF_CUSTOMER.split("%s")[0])
        .order_by("taken_at").values_list("plan_total_cost", flat=True)
    )
    assert len(costs) == SNAPSHOTS and costs[-1] > 5 * costs[0]  # index scan, then seq scan
    assert lines[-3].startswith(
        'advisor suggests CREATE INDEX CONCURRENTLY ON "public"."orders" ("customer_id")'
    ) and lines[-3].endswith("(verified)")
    assert lines[-2].startswith("model: none trained, not enough history")  # 5 snapshots
    assert not ModelVersion.objects.exists()
    assert lines[-1].startswith("done in ") and f"{SNAPSHOTS} snapshots of 'demo'" in lines[-1]


@pytest.mark.django_db(transaction=True)
def test_the_demos_regressed_query_shows_its_prediction_now_and_with_the_index(
    demo_dbname, settings, tmp_path, client, make_viewer
):
    """As after scripts/run: the demo played as by default and trained a model on its own
    history, which beat the better baseline on the held-out part; the ML service, started
    after it, answers with it, and the plan change it saw (the dropped index) tells it what the
    index would do. (At scale 0.2 the model lost to the last value in one run of two.)"""
    lines = []
    database = run_demo(dbname=demo_dbname, report=lines.append)
    print("\n".join(lines))  # its figures, shown when the test fails
    model = ModelVersion.objects.get(current=True)
    assert model.metrics["mae_ms"] < model.metrics["baseline_mae_ms"]
    assert model.metrics["plan_elasticity"] > 0
    service = Service(tmp_path / "service.log", workers=1)
    settings.ML_SERVICE_URL = service.url
    client.force_login(make_viewer("analyst"))
    regressed = Query.objects.get(database=database, text__startswith="SELECT id, status, total")
    try:
        detail = client.get(
            f"/api/v1/databases/{database.id}/queries/{regressed.fingerprint}/"
        ).json()
        page = client.get(f"/databases/{database.id}/queries/{regressed.fingerprint}/")
    finally:
        service.stop()

    now, with_index = detail["prediction"]["current"], detail["prediction"]["optimized"]
    assert (now["status"], now["source"], now["model_version"]) == ("ok", "model", model.version)
    assert (with_index["status"], with_index["source"]) == ("ok", "model")
    assert with_index["predicted_ms"] < now["predicted_ms"] / 2
    html = page.content.decode()
    assert f"now: <span class=\"prediction\"><strong>{now['predicted_ms']:.2f} ms" in html
    shown = "With the suggested index: <span class=\"prediction\"><strong>"
    assert f"{shown}{with_index['predicted_ms']:.2f} ms" in html
    assert "The same figure" not in html


@pytest.mark.django_db(transaction=True)
def test_the_demo_database_is_named_after_the_app_database():
    """Two checkouts on one server, with their own app databases, reset their own demos."""
    expected = f"{settings.DATABASES['default']['NAME']}_demo"
    try:
        call_command("demo", "--snapshots", "3", "--scale", "0.01", stdout=io.StringIO())
        dsn = MonitoredDatabase.objects.get(name=DEMO_NAME).dsn
        assert conninfo.conninfo_to_dict(dsn)["dbname"] == expected
    finally:
        drop_database(expected)


@pytest.mark.django_db(transaction=True)
def test_the_demo_command_rejects_too_few_snapshots():
    with pytest.raises(CommandError, match="--snapshots must be at least 3"):
        call_command("demo", "--snapshots", "1", stdout=io.StringIO())
