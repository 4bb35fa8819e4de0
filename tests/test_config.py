"""Settings from the environment: good values parse, bad ones stop start-up in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pganalytics.config import Config, ConfigError, parse_duration, parse_period

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "text, seconds",
    [("900", 900), ("900s", 900), ("15m", 900), ("1h", 3600), ("100ms", 0.1), ("1.5s", 1.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "", "15 minutes", "-5s", "1y", "ms"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, message", [("0", "must be longer than 0"), ("0ms", "must be longer"), ("soon", "such as")]
)
def test_periods_are_positive_durations(text, message):
    assert parse_period("15m") == 900
    with pytest.raises(ValueError, match=message):
        parse_period(text)


def test_defaults_apply_when_variables_are_unset():
    config = Config({})
    assert config.duration("FEATURE_CACHE_TTL", "15m") == 900
    assert config.integer("CACHE_MAX_SIZE", 10000, minimum=1) == 10000
    assert config.boolean("CACHE_ENABLED", True) is True
    assert config.url("CACHE_L2_URL", "", schemes=("redis",)) == ""
    assert config.database("DATABASE_URL", "postgres://localhost/pganalytics")["NAME"] == "pganalytics"


def test_values_from_the_environment_are_typed():
    config = Config(
        {
            "FEATURE_CACHE_TTL": "2h",
            "CACHE_MAX_SIZE": "17",
            "CACHE_ENABLED": "off",
            "RETRY_BACKOFF_MULTIPLIER": "1.5",
            "CACHE_L2_URL": "redis://127.0.0.1:6379/2",
            "DATABASE_URL": "postgres://app:secret@db.example:6543/analytics",
        }
    )
    assert config.duration("FEATURE_CACHE_TTL", "15m") == 7200
    assert config.integer("CACHE_MAX_SIZE", 10000, minimum=1) == 17
    assert config.boolean("CACHE_ENABLED", True) is False
    assert config.number("RETRY_BACKOFF_MULTIPLIER", 2.0, minimum=1.0) == 1.5
    assert config.url("CACHE_L2_URL", "", schemes=("redis",)) == "redis://127.0.0.1:6379/2"
    database = config.database("DATABASE_URL", "postgres://localhost/x")
    assert (database["HOST"], database["PORT"], database["NAME"]) == ("db.example", 6543, "analytics")


@pytest.mark.parametrize(
    "name, value, read",
    [
        ("CACHE_MAX_SIZE", "-5", lambda c: c.integer("CACHE_MAX_SIZE", 10000, minimum=1)),
        ("CACHE_MAX_SIZE", "lots", lambda c: c.integer("CACHE_MAX_SIZE", 10000, minimum=1)),
        ("FEATURE_CACHE_TTL", "soon", lambda c: c.duration("FEATURE_CACHE_TTL", "15m")),
        ("CACHE_ENABLED", "maybe", lambda c: c.boolean("CACHE_ENABLED", True)),
        ("RETRY_BACKOFF_MULTIPLIER", "0.5", lambda c: c.number("RETRY_BACKOFF_MULTIPLIER", 2, 1)),
        ("ML_SERVICE_URL", "localhost:8081", lambda c: c.url("ML_SERVICE_URL", "", ("http",))),
        ("DATABASE_URL", "nonsense", lambda c: c.database("DATABASE_URL", "postgres://h/d")),
        ("DATABASE_URL", "mysql://h/d", lambda c: c.database("DATABASE_URL", "postgres://h/d")),
        ("DATABASE_URL", "postgres://h:abc/d", lambda c: c.database("DATABASE_URL", "")),
        ("DATABASE_URL", "postgres://h:99999/d", lambda c: c.database("DATABASE_URL", "")),
        ("DATABASE_URL", "postgres://[::1/d", lambda c: c.database("DATABASE_URL", "")),
        ("ML_SERVICE_URL", "http://h:abc", lambda c: c.url("ML_SERVICE_URL", "", ("http",))),
        ("ML_SERVICE_URL", "http:/h", lambda c: c.url("ML_SERVICE_URL", "", ("http",))),
        ("CACHE_L2_URL", "redis://[bad", lambda c: c.url("CACHE_L2_URL", "", ("redis",))),
        ("FEATURE_CACHE_TTL", "100ms", lambda c: c.cache_timeout("FEATURE_CACHE_TTL", "15m")),
        ("FEATURE_CACHE_TTL", "1500ms", lambda c: c.cache_timeout("FEATURE_CACHE_TTL", "15m")),
        ("FEATURE_CACHE_TTL", "0", lambda c: c.cache_timeout("FEATURE_CACHE_TTL", "15m")),
        ("ML_SERVICE_TIMEOUT", "0s", lambda c: c.period("ML_SERVICE_TIMEOUT", "5s")),
    ],
)
def test_bad_values_name_the_variable_and_the_value(name, value, read):
    with pytest.raises(ConfigError) as error:
        read(Config({name: value}))
    assert name in str(error.value) and repr(value) in str(error.value)


@pytest.mark.parametrize(
    "url",
    ["postgres://u:s@host:5432/", "postgres://u:hunter2@host:abc/d", "postgres://u:p@ss@h:x/d"],
)
def test_database_errors_show_the_url_with_only_its_password_masked(url):
    with pytest.raises(ConfigError) as error:
        Config({"DATABASE_URL": url}).database("DATABASE_URL", "")
    password = url.split("://u:")[1].rsplit("@", 1)[0]
    shown = url.replace(f":{password}@", ":***@")
    assert repr(shown) in str(error.value)


def test_values_are_taken_as_written_not_as_references_to_other_variables():
    config = Config({"SECRET_KEY": "$ecret", "FEATURE_CACHE_TTL": "$OTHER", "OTHER": "60"})
    assert config.text("SECRET_KEY", "default") == "$ecret"
    with pytest.raises(ConfigError, match="FEATURE_CACHE_TTL='\\$OTHER'"):
        config.cache_timeout("FEATURE_CACHE_TTL", "15m")


def test_cache_timeouts_are_whole_seconds_and_hosts_a_list():
    config = Config({"FEATURE_CACHE_TTL": "1.5m", "ALLOWED_HOSTS": " a.example, ,b.example"})
    assert config.cache_timeout("FEATURE_CACHE_TTL", "15m") == 90
    assert config.words("ALLOWED_HOSTS", "") == ["a.example", "b.example"]
    socket = "unix:///run/redis.sock"
    assert Config({"L2": socket}).url("L2", "", ("unix",)) == socket


def run_check(**environment):
    env = {**os.environ, **environment}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("CACHE_MAX_SIZE", "-5"),
        ("FEATURE_CACHE_TTL", "soon"),
        ("DATABASE_URL", "nonsense"),
        ("METRICS_ALLOWED_ADDRESSES", "everyone"),
        ("CACHE_L2_URL", "memcached://127.0.0.1"),
        ("CACHE_L2_URL", "redis://127.0.0.1:abc"),
        ("DATABASE_URL", "postgres://localhost:abc/pganalytics"),
    ],
)
def test_start_up_stops_with_one_clear_line(name, value):
    result = run_check(**{name: value})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0] and value in lines[0]
    assert "Traceback" not in result.stderr


def test_start_up_with_the_defaults_passes_the_checks():
    result = run_check()
    assert result.returncode == 0, result.stderr
