"""Shared fixtures: the suite runs against the real PostgreSQL brought up by scripts/setup."""

import os
import socket
import threading
from urllib.parse import quote

import psycopg
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from psycopg import sql

from pganalytics.analytics.collector import collect
from pganalytics.models import MonitoredDatabase
from pganalytics.targets import drop_database, ensure_database, local_dsn, reset_statements


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """PYTEST_DB_SUFFIX lets several suite runs share one server without sharing a database."""
    from django.conf import settings

    suffix = os.environ.get("PYTEST_DB_SUFFIX")
    if suffix:
        test = settings.DATABASES["default"].setdefault("TEST", {})
        base = test.get("NAME") or f"test_{settings.DATABASES['default']['NAME']}"
        test["NAME"] = f"{base}_{suffix}"


def child_environment():
    """os.environ for a `manage.py` started in its own process, on this test's database."""
    database = connection.settings_dict
    user = f"{quote(database['USER'])}:{quote(database['PASSWORD'])}@" if database["USER"] else ""
    port = f":{database['PORT']}" if database["PORT"] else ""
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{user}{database['HOST']}{port}/{database['NAME']}",
        "MAX_IDLE_DATABASE_CONNS": "1",
    }


@pytest.fixture(scope="session")
def answering_ml_service():
    """A loopback server answering as the ML service does (tests.fault_server), all session."""
    from tests.fault_server import FaultServer

    server = FaultServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def ml_service_url(answering_ml_service, settings):
    """Pages ask the ML service for predictions: here answering_ml_service, so that no test
    depends on what listens at ML_SERVICE_URL on this machine (a test points it elsewhere
    with the `settings` fixture)."""
    settings.ML_SERVICE_URL = answering_ml_service.url


@pytest.fixture(scope="session")
def target_name():
    """A scratch database for this test session, dropped at the end."""
    name = f"pganalytics_target_{os.environ.get('PYTEST_DB_SUFFIX', 'main')}_{os.getpid()}"
    ensure_database(name)
    with psycopg.connect(local_dsn(name), autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY)")
        connection.execute(
            "INSERT INTO items SELECT generate_series(1, 100) ON CONFLICT DO NOTHING"
        )
    yield name
    drop_database(name)


@pytest.fixture
def target(target_name):
    """A connection to the scratch database, its statistics reset for a clean start."""
    with psycopg.connect(local_dsn(target_name), autocommit=True) as connection:
        reset_statements(connection)
        yield connection


@pytest.fixture
def monitored(db, target_name):
    return MonitoredDatabase.objects.create(name="target", dsn=local_dsn(target_name))


@pytest.fixture
def two_snapshots(target, monitored):
    """`monitored` with two snapshots: one interval of a lookup run ten times."""
    collect(monitored)
    for number in range(10):
        target.execute("SELECT count(*) FROM items WHERE id = %s", [number])
    collect(monitored)
    return monitored


@pytest.fixture
def make_viewer(db):
    """`make_viewer(name)`: a user (password "pw") of the group "Analytics viewers", who may
    read the analytics pages and API. Migration 0005 makes the group (test_viewers.py checks
    it); it is made again here after a transactional test's flush, which drops it."""

    def make(name):
        group, _ = Group.objects.get_or_create(name="Analytics viewers")
        group.permissions.add(Permission.objects.get(codename="view_analytics"))
        user = User.objects.create_user(name, password="pw")
        user.groups.add(group)
        return user

    return make


@pytest.fixture
def viewer_client(client, make_viewer):
    """The test client, logged in as "analyst", a viewer."""
    client.force_login(make_viewer("analyst"))
    return client


@pytest.fixture
def unreachable(db):
    """A monitored database whose server does not exist: its pages show no snapshots."""
    dsn = "host=127.0.0.1 port=1 dbname=x"
    return MonitoredDatabase.objects.create(name="unreachable", dsn=dsn)


@pytest.fixture
def make_role(target_name):
    """`make_role(kind, *grants)`: a new login role, `{role}` in each grant statement standing
    for its quoted name; dropped after the test, with what it owns in the target database."""
    made = []

    def make(kind, *grants):
        role = f"pganalytics_{kind}_{os.environ.get('PYTEST_DB_SUFFIX', 'main')}_{os.getpid()}"
        name = sql.Identifier(role)
        with psycopg.connect(local_dsn(target_name), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
            made.append(role)
            for grant in grants:
                connection.execute(sql.SQL(grant).format(role=name))
        return role

    yield make
    with psycopg.connect(local_dsn(target_name), autocommit=True) as connection:
        for role in reversed(made):
            name = sql.Identifier(role)
            connection.execute(sql.SQL("DROP OWNED BY {}").format(name))
            connection.execute(sql.SQL("DROP ROLE {}").format(name))


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a hung target.
    `accepted`: the connections; `close()` drops them all."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                self.accepted.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self):
        self.listener.close()
        for accepted in self.accepted:
            accepted.close()


@pytest.fixture
def silent_server():
    """A SilentServer, closed after the test."""
    server = SilentServer()
    yield server
    server.close()
