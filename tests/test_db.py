"""The DB tuning layer: pooled or persistent connections from config, live pool figures."""

import threading

import pytest
from django.db import connection
from django.db.utils import ConnectionHandler

from pganalytics.config import ConfigError
from pganalytics.db import database_settings, pool_stats

URL_CONFIG = {"ENGINE": "django.db.backends.postgresql", "NAME": "pganalytics", "HOST": "127.0.0.1"}


def tuning(**overrides):
    values = dict(
        pool=True, max_conns=8, min_conns=2, max_idle_time=600.0, max_lifetime=3600.0,
        connect_timeout=2.5,
    )
    return database_settings(URL_CONFIG, **{**values, **overrides})


def test_pool_settings_follow_the_config():
    settings = tuning()
    assert settings["CONN_MAX_AGE"] == 0
    assert settings["OPTIONS"]["pool"] == {
        "min_size": 2,
        "max_size": 8,
        "max_idle": 600.0,
        "max_lifetime": 3600.0,
        "timeout": 2.5,
    }
    assert settings["OPTIONS"]["connect_timeout"] == 3  # libpq's: whole seconds


def test_persistent_settings_when_the_pool_is_off():
    settings = tuning(pool=False)
    assert "pool" not in settings["OPTIONS"]
    assert settings["CONN_MAX_AGE"] == 3600
    assert settings["CONN_HEALTH_CHECKS"] is True


def test_a_pool_option_from_the_url_is_replaced_by_the_config():
    settings = database_settings(
        {**URL_CONFIG, "OPTIONS": {"pool": "True", "sslmode": "disable"}},
        pool=False, max_conns=5, min_conns=1, max_idle_time=1, max_lifetime=1, connect_timeout=3,
    )
    assert settings["OPTIONS"] == {"sslmode": "disable", "connect_timeout": 3}


def test_more_idle_than_total_connections_is_a_config_error():
    with pytest.raises(ConfigError, match="MAX_IDLE_DATABASE_CONNS"):
        tuning(min_conns=9)


@pytest.mark.parametrize("pooled", [True, False])
def test_both_modes_serve_queries_from_many_threads(pooled, django_db_blocker):
    # Its own alias: Django keeps one pool per alias per process, "default" is the suite's.
    handler = ConnectionHandler(
        {"default": {"ENGINE": "django.db.backends.dummy"}, "tuning": tuning(pool=pooled)}
    )
    results, errors = [], []

    def query():
        try:
            with django_db_blocker.unblock(), handler["tuning"].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                results.append(cursor.fetchone()[0])
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            handler["tuning"].close()

    threads = [threading.Thread(target=query) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 6
    wrapper = handler["tuning"]
    assert (wrapper.pool is not None) is pooled
    if pooled:
        stats = wrapper.pool.get_stats()
        assert stats["requests_num"] >= 6
        assert len(set(results)) <= 8
        wrapper.close_pool()


def test_pool_stats_of_the_live_default_connection(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    stats = pool_stats()
    assert stats["pooled"] is True
    assert stats["max_size"] == 8 and stats["min_size"] == 1  # the defaults
    assert stats["size"] >= 1
    assert stats["requests"] >= 1
    assert set(stats) >= {"size", "available", "waiting", "requests", "errors"}
