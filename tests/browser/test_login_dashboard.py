"""Browser journey: each role signs in, lands on the dashboard and sees its own navigation."""

import django_rq
import pytest
from rq import SimpleWorker

from portal.roles import Role
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

EXPECTED_NAV = {
    Role.HELPDESK: ["Dashboard", "Mailboxes", "Bulk edits", "Drift"],
    Role.WAVE_OPERATOR: ["Dashboard", "Mailboxes", "Waves", "Readiness", "Bulk edits"],
    Role.APPROVER: ["Dashboard", "Mailboxes", "Waves", "Readiness"],
    Role.AUDITOR: ["Dashboard", "Mailboxes", "Waves", "Readiness", "Audit log", "Drift"],
    Role.ADMIN: [
        "Dashboard",
        "Mailboxes",
        "Waves",
        "Readiness",
        "Bulk edits",
        "Audit log",
        "Drift",
        "Inventory",
        "Roles",
        "Connections",
        "Background jobs",
    ],
}


@pytest.mark.parametrize("role", list(Role))
def test_role_signs_in_and_sees_its_navigation(role, live_server, page, screenshot, make_user):
    make_user(f"{role}-user", role)
    page.goto(live_server.url + "/")
    assert page.url.startswith(live_server.url + "/login/")
    screenshot("login")

    page.fill("#id_username", f"{role}-user")
    page.fill("#id_password", "wrong password")
    page.click("button[type=submit]")
    assert page.get_by_role("alert").inner_text().startswith("Your username and password did not match")

    page.fill("#id_username", f"{role}-user")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    assert page.locator("h1").inner_text() == "Dashboard"
    assert page.locator("nav[aria-label=Main] a").all_inner_texts() == EXPECTED_NAV[role]
    assert page.get_by_test_id("username").inner_text() == f"{role}-user"
    assert page.get_by_test_id("tile-mailboxes").is_visible()
    screenshot("dashboard")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(live_server.url + "/login/")
    page.goto(live_server.url + "/")
    assert page.url.startswith(live_server.url + "/login/")


def test_auditor_verifies_the_chain_with_htmx(live_server, page, screenshot, make_user, sign_in):
    make_user("audra", Role.AUDITOR)
    queue = django_rq.get_queue("default")
    queue.empty()
    sign_in("audra")
    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url(live_server.url + "/audit/")
    screenshot("audit-log")
    page.get_by_role("button", name="Verify the hash chain").click()
    result = page.locator("#verify-result")
    result.get_by_text("Verifying the hash chain in the background").wait_for()
    screenshot("audit-verifying")
    # The verification job, run by a real worker in this thread (it shares the test database); the page polls.
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    result.locator("p.ok").wait_for()
    assert "The chain is intact" in result.inner_text()
    # The swap happened in place: still on the audit page, no full navigation.
    assert page.url == live_server.url + "/audit/"
    screenshot("audit-verified")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot("audit-verified-390")
