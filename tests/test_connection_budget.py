"""The start-up check of connections against the real server's max_connections."""

import pytest
from django.db import connection

from pganalytics.connection_budget import server_limits, warning
from pganalytics.db import database_settings

URL_CONFIG = {"NAME": "pganalytics", "USER": "", "PASSWORD": "", "HOST": "", "PORT": ""}


def database(max_conns, pool=True):
    return database_settings(
        URL_CONFIG, pool=pool, max_conns=max_conns, min_conns=1, max_idle_time=600,
        max_lifetime=3600, connect_timeout=3,
    )


@pytest.fixture
def limits(db):
    max_connections, reserved = server_limits(connection.settings_dict)
    assert 0 <= reserved < max_connections
    return {"max_connections": max_connections, "reserved": reserved}


def test_workers_whose_pools_exceed_the_server_are_warned_of(limits):
    accepted = limits["max_connections"] - limits["reserved"]
    workers = accepted // 10 + 1  # x 10 each, with no ML service: one pool too many
    message = warning(
        workers=workers, threads=1, database=database(10), ml_workers=0, **limits
    )
    assert message is not None
    assert f"may open {workers * 10} connections" in message
    assert f"the server accepts {accepted}" in message
    assert f"max_connections={limits['max_connections']}" in message
    for variable in ("MAX_DATABASE_CONNS=10", "ML_SERVICE_WORKERS", "--workers"):
        assert variable in message


def test_the_ml_service_counts_and_a_fitting_configuration_is_quiet(limits):
    accepted = limits["max_connections"] - limits["reserved"]
    fitting = dict(threads=1, database=database(2), **limits)
    assert warning(workers=accepted // 2, ml_workers=0, **fitting) is None
    # its two workers and its runner push it over
    assert "the ML service's 3 processes" in warning(
        workers=accepted // 2, ml_workers=2, **fitting
    )


def test_without_the_pool_each_thread_holds_one(limits):
    accepted = limits["max_connections"] - limits["reserved"]
    unpooled = dict(database=database(50, pool=False), ml_workers=0, **limits)
    assert warning(workers=accepted, threads=1, **unpooled) is None
    assert "4 threads, no pool" in warning(workers=accepted, threads=4, **unpooled)
