"""Shared fixtures: the suite runs against the real PostgreSQL brought up by scripts/setup."""

import os

import psycopg
import pytest

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
