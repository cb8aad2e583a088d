"""Browser journey: an administrator opens the connection settings and tests the directory connection, with HTMX
and without JavaScript, at desktop and phone widths."""

import pytest

from portal.roles import Role
from tests.browser.conftest import ARTIFACTS
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def test_an_administrator_tests_the_directory_connection_in_place(live_server, page, screenshot, make_user, sign_in):
    make_user("root", Role.ADMIN)
    sign_in("root")
    page.get_by_role("link", name="Connections").click()
    page.wait_for_url(live_server.url + "/settings/connections/")
    assert page.locator("h1").inner_text() == "Connections"
    screenshot("connections")
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#connection-test-result")
    result.get_by_test_id("connection-ok").wait_for()
    assert "Connected." in result.inner_text() and "NTDS Settings" in result.inner_text()
    assert page.url == live_server.url + "/settings/connections/"  # swapped in place
    screenshot("connection-tested")

    page.set_viewport_size({"width": 390, "height": 844})
    screenshot("connection-tested-390px")
    # Nothing is wider than the phone's screen: long DNs wrap, and so does the navigation.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_without_javascript_the_test_is_a_plain_form_post(live_server, chromium, make_user, request):
    make_user("root", Role.ADMIN)
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(live_server.url + "/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.goto(live_server.url + "/settings/connections/")
        page.get_by_role("button", name="Test connection").click()
        page.wait_for_url(live_server.url + "/settings/connections/test/")
        assert "Connected." in page.locator("#connection-test-result").inner_text()
        folder = ARTIFACTS / request.node.name
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / "01-tested-without-javascript.png"), full_page=True)
    finally:
        context.close()
