"""The analytics pages in a real browser (Debian's chromium driven by Playwright against the
live server): a viewer logs in, reaches a database's overview from the list, and goes on
from it to the top queries and to a query's page."""

import re

from playwright.sync_api import expect

from tests.test_browser import ARTIFACTS, browser, empty_caches, page  # noqa: F401 - fixtures
from tests.test_pages_api import LOOKUP, collected  # noqa: F401 - fixtures


def test_a_viewer_reaches_the_overview_first_and_goes_on_from_it(
    page, live_server, make_viewer, collected  # noqa: F811
):
    make_viewer("reader")
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", "pw")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Monitored databases")

    page.click("text=target")
    expect(page.locator("h1")).to_have_text("Overview · target")
    expect(page.locator("nav.tabs a.active")).to_have_text("Overview")
    expect(page.locator("#collection")).to_contain_text("ago")
    rows = page.locator("#top tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 2
    shares = [float(text.split()[0]) for text in page.locator("#top td.share").all_inner_texts()]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.05
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)

    page.click("nav.tabs >> text=Top queries")
    expect(page.locator("h1")).to_have_text("Top queries · target")
    expect(page.locator("thead")).to_contain_text("Share of time")

    page.click("nav.tabs >> text=Overview")
    page.locator("#top a", has_text=LOOKUP.split("%s")[0]).click()
    expect(page.locator("h1")).to_have_text(re.compile(r"^Query [0-9a-f]{16} · target$"))
