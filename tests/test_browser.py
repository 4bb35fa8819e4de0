"""The admin in a real browser: Debian's chromium driven by Playwright against the live
server. The cache dashboard's figures change without a reload; clearing goes through the
confirmation. The monitored databases' list fits the window with a long error."""

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import caches
from playwright.sync_api import expect, sync_playwright

from caching import registry
from pganalytics.models import MonitoredDatabase

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DASHBOARD = "/admin/caching/cachedashboard/"
PASSWORD = "browser-pw"


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test
    # (creating users) are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    assert Path(CHROMIUM).exists(), "chromium missing: scripts/setup test installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture(autouse=True)
def empty_caches():
    registry.clear_all()


def staff_user(name, can_clear):
    user = User.objects.create_user(name, password=PASSWORD, is_staff=True)
    if can_clear:
        user.user_permissions.add(Permission.objects.get(codename="clear_cache"))
    return user


def log_in(page, live_server, user, then=DASHBOARD, heading="Cache dashboard"):
    page.goto(f"{live_server.url}/admin/login/?next={then}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("h1")).to_have_text(heading)


def cell(page, cache, field):
    return page.locator(f'tr[data-cache="{cache}"] [data-field="{field}"]')


def test_figures_refresh_live_and_a_cache_is_cleared_through_the_confirmation(
    page, live_server
):
    log_in(page, live_server, staff_user("clearer", can_clear=True))
    expect(cell(page, "features", "entries")).to_have_text("0")
    page.evaluate("window.notReloaded = true")

    features = caches["features"]  # the live server runs in this process: same caches
    for key in range(5):
        features.set(key, {"key": key})
        features.get(key)
    hits = features.metrics()["hits"]

    expect(cell(page, "features", "entries")).to_have_text("5", timeout=10_000)
    expect(cell(page, "features", "hits")).to_have_text(str(hits))
    expect(cell(page, "totals", "entries")).to_have_text("5")
    assert page.evaluate("window.notReloaded") is True
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    page.locator('tr[data-cache="features"] a.button').click()
    expect(page.locator("#content")).to_contain_text("features: 5 entries")
    assert features.metrics()["entries"] == 5  # nothing cleared before the confirmation
    page.click("input[value='Yes, clear']")

    expect(page.locator(".messagelist")).to_contain_text("Cleared features (5 entries)")
    expect(cell(page, "features", "entries")).to_have_text("0")
    assert features.metrics()["entries"] == 0


def test_without_the_permission_no_buttons_and_a_forged_post_is_403(page, live_server):
    caches["explain"].set("plan", "kept")
    log_in(page, live_server, staff_user("viewer", can_clear=False))
    expect(page.locator("#cache-table")).to_be_visible()
    expect(page.locator("#cache-table a.button")).to_have_count(0)

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"{live_server.url}{DASHBOARD}clear/explain/",
        form={"csrfmiddlewaretoken": token},
        headers={"Referer": f"{live_server.url}{DASHBOARD}"},
    )
    assert response.status == 403
    assert caches["explain"].get("plan") == "kept"


def test_a_long_error_fits_the_database_list_and_is_whole_in_its_tooltip(page, live_server):
    error = (
        "far: cannot connect to postgresql://monitor:***@reporting-replica-07.eu-west-3.internal"
        ".example.com:5432/orders_reporting: connection failed: "
        + 'connection to server at "10.20.30.40", port 5432 failed: timeout expired; ' * 20
    )
    MonitoredDatabase.objects.create(name="far", dsn="dbname=far", last_error=error)
    MonitoredDatabase.objects.create(
        name="replica",
        dsn="postgresql://monitor:secret@reporting-replica-07.eu-west-3.internal.example.com"
        ":5432/orders_reporting?sslmode=verify-full&application_name=pganalytics-collector",
        last_error=error,
    )
    admin = User.objects.create_superuser("admin", password=PASSWORD)
    databases = "/admin/pganalytics/monitoreddatabase/"
    log_in(page, live_server, admin, databases, "Select monitored database to change")

    results = page.locator("#changelist-form .results")
    assert results.evaluate("box => box.scrollWidth <= box.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    cell = page.locator("td.field-error").first
    assert cell.inner_text().endswith("…") and len(cell.inner_text()) <= 150
    assert cell.locator("[title]").get_attribute("title") == error
