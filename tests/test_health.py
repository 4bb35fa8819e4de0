"""/healthz and the admin's login page: the process and its database answer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_healthz_answers_with_the_database_state(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_admin_login_page_is_served(client, db):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"Django administration" in response.content


PROBE = """
import django, json
django.setup()
from django.test import Client
response = Client(HTTP_HOST="localhost").get("/healthz")
print(json.dumps([response.status_code, response.json()]))
"""


@pytest.mark.parametrize("pool, reason", [("true", "after 2.00 sec"), ("false", "port 1 failed")])
def test_healthz_says_503_and_why_when_the_database_is_down(pool, reason):
    environment = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "pganalytics.settings",
        "DATABASE_URL": "postgres://127.0.0.1:1/nowhere", "DATABASE_POOL": pool,
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=60,
    )
    status, body = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 503 and body["status"] == "error" and reason in body["database"]
