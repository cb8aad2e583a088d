"""The 500 and CSRF pages in Chromium: the portal's layout and stylesheet, a way back, and axe-core's check, on a
desktop and a phone (the 403 and 404 pages are checked with each role's pages in test_accessibility)."""

import pytest

from portal.roles import Role
from tests.browser.conftest import ARTIFACTS, serious_violations

pytestmark = pytest.mark.browser


def test_the_500_and_csrf_pages_are_styled_with_a_way_back(live_server, page, settings, make_user, sign_in, axe_source):
    settings.ROOT_URLCONF = "tests.portal.error_urls"  # the portal's URLs and one page that fails
    make_user("root", Role.ADMIN)
    sign_in("root")
    folder = ARTIFACTS / "error_pages"
    folder.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 800})
        response = page.goto(live_server.url + "/fails/")
        assert response.status == 500
        assert page.locator("h1").inner_text() == "Something went wrong"
        assert page.evaluate("getComputedStyle(document.querySelector('header.topbar')).backgroundColor") != (
            "rgba(0, 0, 0, 0)"
        )
        assert page.get_by_role("link", name="Go to the dashboard").is_visible()
        assert serious_violations(page, axe_source) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(folder / f"500-{width}.png"), full_page=True)

        # A form sent with a token that is no longer the session's (signed in again in another tab).
        page.goto(live_server.url + "/roles/")
        form = page.locator("form[action='/roles/assign/']")
        form.locator("input[name=csrfmiddlewaretoken]").evaluate("input => input.value = 'stale'.repeat(8)")
        with page.expect_navigation():
            form.evaluate("form => form.submit()")  # past the browser's own required-field check
        assert page.locator("h1").inner_text() == "This form has expired"
        assert serious_violations(page, axe_source) == []
        page.screenshot(path=str(folder / f"403-csrf-{width}.png"), full_page=True)
