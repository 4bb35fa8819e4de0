"""The app's own database down: pages and API answer 503 within seconds (JSON under /api/,
the app's page elsewhere, with Retry-After), and runserver stops at once with one line."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pganalytics.db import database_settings

ROOT = Path(__file__).resolve().parent.parent
CLOSED = "127.0.0.1:1"

# A session cookie makes the first request read the session, hence the database.
PROBE = """
import django, json, time
django.setup()
from django.test import Client
client = Client(HTTP_HOST="localhost", raise_request_exception=False)
client.cookies["sessionid"] = "a" * 32
for url in ["/api/v1/databases/", "/"]:
    start = time.monotonic()
    response = client.get(url)
    print(json.dumps([
        response.status_code, response["Content-Type"], response.get("Retry-After"),
        response.content.decode(), time.monotonic() - start,
    ]))
"""


@pytest.fixture
def silent_server():
    """host:port of a server that accepts connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def environment(address, **more):
    return {
        **os.environ, "DJANGO_SETTINGS_MODULE": "pganalytics.settings", "DEBUG": "false",
        "DATABASE_URL": f"postgres://app:secret@{address}/pganalytics", **more,
    }


@pytest.mark.parametrize("pool", ["true", "false"])
@pytest.mark.parametrize("down", ["closed", "silent"])
def test_pages_and_api_answer_503_within_seconds(pool, down, silent_server):
    address = CLOSED if down == "closed" else silent_server
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=environment(address, DATABASE_POOL=pool),
        capture_output=True, text=True, timeout=60,
    )
    api, page = [json.loads(line) for line in done.stdout.splitlines()]
    assert api[:4] == [
        503, "application/json", "5",
        '{"error": "the database does not answer: try again in a few seconds"}',
    ]
    assert page[:3] == [503, "text/html; charset=utf-8", "5"]
    assert "<h1>Unavailable</h1>" in page[3] and "pganalytics/style.css" in page[3]
    assert api[4] < 5 and page[4] < 5  # DATABASE_CONNECT_TIMEOUT is 3 s
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
    assert "Service Unavailable: /api/v1/databases/ (" in done.stderr


def test_the_connect_timeout_is_libpq_s_unless_the_url_sets_one():
    tuning = dict(pool=False, max_conns=5, min_conns=1, max_idle_time=1, max_lifetime=1)
    default = database_settings({"NAME": "x"}, connect_timeout=2.5, **tuning)
    assert default["OPTIONS"]["connect_timeout"] == 3
    url_config = {"NAME": "x", "OPTIONS": {"connect_timeout": "9"}}
    own = database_settings(url_config, connect_timeout=3, **tuning)
    assert own["OPTIONS"]["connect_timeout"] == "9"


@pytest.mark.parametrize("command", [["runserver", "127.0.0.1:0"], ["check_database"]])
@pytest.mark.parametrize("down", ["closed", "silent"])
def test_runserver_and_scripts_run_say_so_in_one_line_and_exit(down, command, silent_server):
    """scripts/run calls check_database before migrate, then runserver."""
    address = CLOSED if down == "closed" else silent_server
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", *command], cwd=ROOT,
        env=environment(address), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1 and time.monotonic() - start < 10
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    prefix = f"pganalytics: the database postgres://app:***@{address}/pganalytics does not answer: "
    assert lines[0].startswith(prefix)
    reason = "Connection refused" if down == "closed" else "timeout expired"
    assert reason in lines[0]
