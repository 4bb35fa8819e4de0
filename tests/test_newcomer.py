"""What a newcomer meets first: a README and configuration table that stand on their own,
the first admin login, one timestamp format, wording that counts right, and the Python
versions the pins allow."""

import ast
import io
import os
import re
import select
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pganalytics import config
from pganalytics.analytics.collector import collect
from pganalytics.demo import describe
from pganalytics.models import MonitoredDatabase, Query, Snapshot
from pganalytics.targets import reset_statements
from tests.conftest import child_environment

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def documented_rows():
    """{variable: its row} of docs/configuration.md's tables."""
    return dict(re.findall(r"^\| `([A-Z0-9_]+)` \|(.*)$", CONFIGURATION, re.MULTILINE))


SETTINGS_READERS = ["pganalytics/settings.py", "pganalytics/db.py", "mlservice/settings.py"]


def test_every_variable_the_settings_read_is_documented_with_its_default():
    trees = [ast.parse((ROOT / path).read_text()) for path in SETTINGS_READERS]
    read = {
        call.args[0].value: call.args[1].value
        for tree in trees
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "config"
    }
    rows = documented_rows()
    assert len(read) > 30 and set(read) <= set(rows), set(read) - set(rows)
    for name, default in read.items():
        shown = "empty" if default == "" else f"`{str(default).lower()}`"
        assert rows[name].split("|")[0].strip().lower() == shown, name


def test_the_variables_of_the_scripts_are_documented_too():
    assert {"PORT", "PGUSER", "PROMETHEUS_MULTIPROC_DIR", "PYTEST_DB_SUFFIX"} <= set(
        documented_rows()
    )


def test_every_duration_unit_is_documented():
    for unit in filter(None, config._SECONDS_PER_UNIT):
        assert f"`{unit}`" in CONFIGURATION, unit


def test_the_readme_links_the_configuration_and_nothing_outside_the_repository():
    assert "(docs/configuration.md)" in README
    assert "../" not in README and "DESIGN.md" not in README
    for folder, document in [(ROOT, README), (ROOT / "docs", CONFIGURATION)]:
        for target in re.findall(r"\]\(([^)#]+)", document):
            if "://" not in target:
                assert (folder / target).exists(), target


def test_requires_python_is_what_every_pinned_dependency_allows():
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib: Python 3.10 runs this too
    allowed = SpecifierSet(re.search(r'^requires-python = "(.*)"$', pyproject, re.M)[1])
    pins = re.findall(r'^ +"([^"]+==[^"]+)",$', pyproject, re.M)
    assert pins and len(pins) == pyproject.count("==")
    required = [
        SpecifierSet(metadata.metadata(Requirement(pin).name).get("Requires-Python", ""))
        for pin in pins
    ]
    for minor in range(8, 16):
        version = Version(f"3.{minor}")
        assert (version in allowed) == all(version in pinned for pinned in required), version


def first_login(terminal=None):
    """`manage.py first_login` on this test's database, in its own session (no controlling
    terminal): reading and writing `terminal`, a pty, or else without input, output piped."""
    streams = (
        {"stdin": terminal, "stdout": terminal} if terminal
        else {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE}
    )
    return subprocess.Popen(
        [sys.executable, "manage.py", "first_login"], cwd=ROOT, env=child_environment(),
        stderr=subprocess.STDOUT, start_new_session=True, **streams,
    )


def converse(terminal, answers, timeout=60):
    """Answer each prompt on the terminal's master side; everything the child wrote."""
    seen, deadline = "", time.monotonic() + timeout
    answers = list(answers)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(terminal, 4096).decode()
            except OSError:  # EIO: the child closed the terminal, it is done
                return seen
            seen += chunk
            if answers and seen.rstrip().endswith(answers[0][0]):
                os.write(terminal, f"{answers.pop(0)[1]}\n".encode())
    raise AssertionError(f"no end of the conversation: {seen!r}")


@pytest.mark.django_db(transaction=True)
def test_on_a_terminal_the_first_login_is_created_interactively():
    main, secondary = os.openpty()
    child = first_login(secondary)
    os.close(secondary)
    try:
        said = converse(main, [
            ("):", "newcomer"), ("Email address:", "new@example.com"),
            ("Password:", "long enough pw"), ("Password (again):", "long enough pw"),
        ])
    finally:
        os.close(main)
    assert child.wait(timeout=30) == 0, said
    assert "no admin login yet, create the first one" in said
    assert "Superuser created successfully." in said
    assert User.objects.get(username="newcomer").is_superuser


@pytest.mark.django_db(transaction=True)
def test_without_a_terminal_the_command_to_run_is_printed_and_then_nothing():
    child = first_login()
    said = child.communicate(timeout=60)[0].decode()
    assert child.returncode == 0 and not User.objects.exists()
    url = child_environment()["DATABASE_URL"]  # the database being served, not the default
    assert said.strip() == (
        f"pganalytics: no admin login yet, create one with: DATABASE_URL='{config.masked(url)}' "
        ".venv/bin/python manage.py createsuperuser"
    )
    User.objects.create_superuser("admin", password="admin pw")
    child = first_login()
    assert child.communicate(timeout=60)[0] == b"" and child.returncode == 0


TAKEN = datetime(2026, 12, 1, 10, 28, 56, tzinfo=timezone.utc)
SHOWN = "2026-12-01 10:28:56 UTC"
LOOKUP = "SELECT count(*) FROM items WHERE id = %s"


def timestamps_in(page):
    """Every date-and-time in the page, with the time zone that follows it."""
    return re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [A-Z]+)?", page)


def collect_at(database, taken_at):
    """A snapshot of `database` as if taken at `taken_at`, and the registration to match."""
    snapshot = collect(database)
    Snapshot.objects.filter(pk=snapshot.pk).update(taken_at=taken_at)
    MonitoredDatabase.objects.filter(pk=database.pk).update(last_collected_at=taken_at)
    Query.objects.filter(database=database).update(last_seen=taken_at)
    Query.objects.filter(database=database, first_seen__gt=taken_at).update(first_seen=taken_at)
    snapshot.refresh_from_db()
    return snapshot


def test_timestamps_read_the_same_on_the_pages_and_in_the_admin(admin_client, target, monitored):
    for minutes_before in (1, 0):
        target.execute(LOOKUP, [1])
        snapshot = collect_at(monitored, TAKEN - timedelta(minutes=minutes_before))
    query = Query.objects.get(database=monitored, text__startswith="SELECT count(*) FROM items")

    urls = [
        "/", f"/databases/{monitored.id}/queries/{query.fingerprint}/",
        "/admin/pganalytics/monitoreddatabase/", "/admin/pganalytics/snapshot/",
    ]
    pages = [admin_client.get(url).content.decode() for url in urls]
    for page in pages:
        assert SHOWN in page and "a.m." not in page and "p.m." not in page
        assert all(shown.endswith(" UTC") for shown in timestamps_in(page)), timestamps_in(page)
    assert "2026-12-01 10:27:56 UTC" in pages[1]  # the older snapshot in the history
    assert str(snapshot) == f"target @ {SHOWN}"
    database = admin_client.get("/api/v1/databases/").json()["databases"][0]
    assert database["last_collected_at"] == "2026-12-01T10:28:56Z"


def test_one_statement_is_one_statement_in_collect_the_admin_and_the_demo(
    admin_client, target, monitored
):
    out = io.StringIO()
    call_command("collect", stdout=out)  # the target's statistics were just reset: one row
    assert out.getvalue().startswith("ok target: 1 statement, 1 moved, in ")

    reset_statements(target)
    response = admin_client.post(
        "/admin/pganalytics/monitoreddatabase/",
        {"action": "collect_now", "_selected_action": [monitored.pk]},
        follow=True,
    )
    assert "Target: snapshot of 1 statement in " in response.content.decode()  # capitalised
    line = describe(Snapshot.objects.latest(), 2, 3)
    assert line.startswith("snapshot 2/3: 1 statement; slowest in the interval: ")
    calls, noun = re.search(r" ms total, (\d+) (calls?): ", line).groups()
    assert noun == ("call" if calls == "1" else "calls")
