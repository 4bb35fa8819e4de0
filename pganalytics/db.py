"""The DB tuning layer: DATABASES from config, pooled (psycopg_pool) or persistent connections."""

import math
import sys

import psycopg
from django.db import connections

from pganalytics.config import ConfigError
from pganalytics.fingerprint import fold_whitespace


class DatabaseUnreachable(Exception):
    """The app's database refused a connection or did not answer in time; says which, why."""


def database_settings(
    url_config, *, pool, max_conns, min_conns, max_idle_time, max_lifetime, connect_timeout
):
    """One DATABASES entry.

    With `pool`, Django's psycopg pool keeps `min_conns` open and grows to `max_conns`;
    Django requires CONN_MAX_AGE 0 then. Without it, each thread keeps one persistent
    connection for `max_lifetime` seconds, health-checked before reuse. Either way a request
    waits at most about `connect_timeout` seconds for a connection (the pool's checkout,
    libpq's `connect_timeout` in whole seconds unless the URL sets one), then gets a 503.
    """
    if min_conns > max_conns:
        raise ConfigError(
            f"MAX_IDLE_DATABASE_CONNS={min_conns} is invalid: "
            f"expected at most MAX_DATABASE_CONNS={max_conns}"
        )
    settings = dict(url_config)
    options = dict(settings.pop("OPTIONS", {}))
    options.pop("pool", None)
    options.setdefault("connect_timeout", math.ceil(connect_timeout))
    if pool:
        options["pool"] = {
            "min_size": min_conns,
            "max_size": max_conns,
            "max_idle": max_idle_time,
            "max_lifetime": max_lifetime,
            "timeout": connect_timeout,
        }
        settings.update(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
    else:
        settings.update(CONN_MAX_AGE=int(max_lifetime), CONN_HEALTH_CHECKS=True)
    settings["OPTIONS"] = options
    return settings


def configured_database(config):
    """The DATABASES entry of the app's database from the environment (`DATABASE_URL` and the
    pool's variables): the web app and the ML service read the same variables the same way."""
    return database_settings(
        config.database("DATABASE_URL", "postgres://localhost/pganalytics"),
        pool=config.boolean("DATABASE_POOL", True),
        max_conns=config.integer("MAX_DATABASE_CONNS", 8, minimum=1),
        min_conns=config.integer("MAX_IDLE_DATABASE_CONNS", 1),
        max_idle_time=config.period("DATABASE_CONN_MAX_IDLE_TIME", "10m"),
        max_lifetime=config.period("DATABASE_CONN_MAX_LIFETIME", "1h"),
        connect_timeout=config.period("DATABASE_CONNECT_TIMEOUT", "3s"),
    )


def pool_stats(alias="default"):
    """Live figures of the alias' pool in this process; `pooled` False without a pool."""
    pool = connections[alias].pool
    if pool is None:
        return {"alias": alias, "pooled": False}
    stats = pool.get_stats()
    return {
        "alias": alias,
        "pooled": True,
        "min_size": pool.min_size,
        "max_size": pool.max_size,
        "size": stats.get("pool_size", 0),
        "available": stats.get("pool_available", 0),
        "waiting": stats.get("requests_waiting", 0),
        "requests": stats.get("requests_num", 0),
        "errors": stats.get("requests_errors", 0),
    }


def check_connection(alias="default"):
    """Connect once, without the pool (whose workers would retry and log every failure),
    within `connect_timeout`; DatabaseUnreachable naming the database and the reason."""
    connection = connections[alias]
    try:
        psycopg.connect(**connection.get_connection_params()).close()
    except psycopg.Error as error:
        where = database_label(connection.settings_dict)
        raise DatabaseUnreachable(f"the database {where} does not answer: {error}") from None


def exit_unless_reachable(alias="default"):
    """check_connection(), or exit with its reason in one line (libpq's spans several)."""
    try:
        check_connection(alias)
    except DatabaseUnreachable as error:
        sys.exit(f"pganalytics: {fold_whitespace(str(error))}")


def database_label(settings_dict):
    """`postgres://user:***@host:port/name` of a DATABASES entry: never its password."""
    user = settings_dict["USER"] + (":***" if settings_dict["PASSWORD"] else "")
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
    userinfo = f"{user}@" if user else ""
    return f"postgres://{userinfo}{settings_dict['HOST']}{port}/{settings_dict['NAME']}"
