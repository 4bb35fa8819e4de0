"""The DB tuning layer: DATABASES from config, pooled (psycopg_pool) or persistent connections."""

from django.db import connections

from pganalytics.config import ConfigError

POOL_CHECKOUT_TIMEOUT = 10.0


def database_settings(url_config, *, pool, max_conns, min_conns, max_idle_time, max_lifetime):
    """One DATABASES entry.

    With `pool`, Django's psycopg pool keeps `min_conns` open and grows to `max_conns`;
    Django requires CONN_MAX_AGE 0 then. Without it, each thread keeps one persistent
    connection for `max_lifetime` seconds, health-checked before reuse.
    """
    if min_conns > max_conns:
        raise ConfigError(
            f"MAX_IDLE_DATABASE_CONNS={min_conns} is invalid: "
            f"expected at most MAX_DATABASE_CONNS={max_conns}"
        )
    settings = dict(url_config)
    options = dict(settings.pop("OPTIONS", {}))
    options.pop("pool", None)
    if pool:
        options["pool"] = {
            "min_size": min_conns,
            "max_size": max_conns,
            "max_idle": max_idle_time,
            "max_lifetime": max_lifetime,
            "timeout": POOL_CHECKOUT_TIMEOUT,
        }
        settings.update(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
    else:
        settings.update(CONN_MAX_AGE=int(max_lifetime), CONN_HEALTH_CHECKS=True)
    settings["OPTIONS"] = options
    return settings


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
