"""Errors: JSON for everything under /api/, the app's own pages elsewhere, no model names;
an X-Request-ID on every response, and a 500's traceback on stderr under that id."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import OperationalError
from django.test import Client, RequestFactory

from pganalytics import errors

ROOT = Path(__file__).resolve().parent.parent
STYLESHEET = "pganalytics/style.css"


def json_error(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    return json.loads(response.content)["error"]


def test_api_404s_are_json_and_name_no_model(viewer_client, unreachable):
    expected = {
        "/api/v1/nothing/": "no page at /api/v1/nothing/",
        "/api/v1/databases/abc/queries/": "no page at /api/v1/databases/abc/queries/",
        "/api/v1/databases/999999/queries/": "database 999999 not found",
        "/api/v1/databases/999999/queries/ffffffffffffffff/": "database 999999 not found",
        f"/api/v1/databases/{unreachable.id}/queries/ffffffffffffffff/":
            f"query ffffffffffffffff not found in database {unreachable.id}",
        "/api/nothing": "no page at /api/nothing",
    }
    assert {url: json_error(viewer_client.get(url), 404) for url in expected} == expected
    viewer_client.logout()
    assert json_error(viewer_client.get("/api/v1/databases/abc/"), 404).startswith("no page")


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_other_methods_are_a_json_405_not_a_csrf_page(make_viewer, unreachable, method):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_viewer("analyst"))
    response = getattr(client, method)(f"/api/v1/databases/{unreachable.id}/queries/")
    assert json_error(response, 405) == f"method {method.upper()} not allowed"
    assert response["Allow"] == "GET, HEAD"


def test_html_404s_are_app_pages(viewer_client, unreachable):
    for url, message in [
        ("/databases/999999/", "Database 999999 not found"),
        (f"/databases/{unreachable.id}/queries/ffffffffffffffff/", "Query ffffffffffffffff"),
        ("/nothing/", "No page at /nothing/"),
    ]:
        page = viewer_client.get(url)
        assert page.status_code == 404
        text = page.content.decode()
        assert "<h1>Not found</h1>" in text and message in text and STYLESHEET in text
        assert 'action="/logout/"' in text and "MonitoredDatabase" not in text


def test_a_bad_host_is_a_400_in_json_or_as_a_page(client, db):
    response = client.get("/api/v1/databases/", HTTP_HOST="evil.example")
    assert json_error(response, 400) == "the request could not be understood"
    page = client.get("/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and "<h1>Bad request</h1>" in page.content.decode()


def test_a_form_sent_without_its_token_gets_an_app_page(db):
    page = Client(enforce_csrf_checks=True).post("/login/", {"username": "a", "password": "b"})
    assert page.status_code == 403
    assert "<h1>Form expired</h1>" in page.content.decode()
    assert STYLESHEET in page.content.decode()


def handled(path, error):
    """What handler500 answers for `path` while `error` is being handled, as Django calls it."""
    request = RequestFactory().get(path)  # no user, no session: as when the database is down
    try:
        raise error
    except type(error):
        return errors.server_error(request)


def test_500_renders_without_a_request_context_and_a_database_error_is_a_503():
    page = handled("/databases/1/", RuntimeError("bug"))
    assert page.status_code == 500 and "<h1>Server error</h1>" in page.content.decode()
    assert STYLESHEET in page.content.decode() and "Log out" not in page.content.decode()
    assert json_error(handled("/api/v1/databases/", RuntimeError("bug")), 500).startswith(
        "internal error, logged with request id"
    )
    down = handled("/api/v1/databases/", OperationalError("connection refused"))
    assert json_error(down, 503) == "the database does not answer: try again in a few seconds"
    assert down["Retry-After"] == "5"
    page = handled("/", OperationalError("connection refused"))
    assert page.status_code == 503 and "<h1>Unavailable</h1>" in page.content.decode()


def test_every_response_carries_a_request_id(client, db):
    generated = {client.get(url)["X-Request-ID"] for url in ["/", "/healthz", "/api/v1/x/"]}
    generated.add(client.get("/static/pganalytics/style.css")["X-Request-ID"])
    assert len(generated) == 4 and all(re.fullmatch(r"[0-9a-f]{32}", id) for id in generated)
    kept = client.get("/healthz", HTTP_X_REQUEST_ID="proxy-7f3a.1:2")
    assert kept["X-Request-ID"] == "proxy-7f3a.1:2"
    for bad in ["two words", "x" * 129, "caf\u00e9", "a\tb", ""]:
        replaced = client.get("/healthz", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", replaced), bad


FAILING = """
import django, json
django.setup()
from django.test import Client
from django.urls import path
from pganalytics import urls
from pganalytics.request_id import current_request_id

def fail(request):
    raise RuntimeError(f"the view failed in request {current_request_id()}")

urls.urlpatterns += [path("api/v1/fail/", fail), path("fail/", fail)]
client = Client(HTTP_HOST="localhost", raise_request_exception=False)
for url, request_id in [("/api/v1/fail/", "trace-api"), ("/fail/", None), ("/gone/", "t-404")]:
    headers = {"HTTP_X_REQUEST_ID": request_id} if request_id else {}
    response = client.get(url, **headers)
    print(json.dumps([response.status_code, response["X-Request-ID"], response.content.decode()]))
"""


def test_a_500_leaves_its_traceback_on_stderr_with_the_request_id_as_does_a_404():
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "pganalytics.settings", "DEBUG": "0"}
    done = subprocess.run(
        [sys.executable, "-c", FAILING], cwd=ROOT, env=environment, capture_output=True,
        text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (api_status, api_id, api_body), (page_status, page_id, page_body), missing = [
        json.loads(line) for line in done.stdout.splitlines()
    ]
    assert (api_status, api_id) == (500, "trace-api")
    assert json.loads(api_body) == {"error": "internal error, logged with request id trace-api"}
    assert page_status == 500 and "<h1>Server error</h1>" in page_body and page_id in page_body
    for request_id in [api_id, page_id]:
        logged = re.search(
            rf"ERROR django.request \[{request_id}\] Internal Server Error: .*\n"
            rf"Traceback \(most recent call last\):\n(.*\n)*?"
            rf"RuntimeError: the view failed in request {request_id}\n",
            done.stderr,
        )
        assert logged, done.stderr
    assert missing[:2] == [404, "t-404"]
    assert "WARNING django.request [t-404] Not Found: /gone/\n" in done.stderr
