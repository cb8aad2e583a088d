"""Browser check of the Content-Security-Policy: every main page loads as the admin with no violation reported, and
htmx still works (live search, an htmx POST) without injecting styles of its own."""

import pytest

from portal.dn import normalize_dn
from portal.roles import Role
from soa.models import Mailbox
from tests.browser.conftest import ARTIFACTS
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

# The admin's pages, as the navigation offers them, plus the ones reached from them.
ADMIN_PAGES = [
    "/",
    "/mailboxes/",
    "/mailboxes/{pk}/",
    "/waves/",
    "/bulk-edits/",
    "/audit/",
    "/drift/",
    "/inventory/",
    "/roles/",
    "/settings/connections/",
    "/settings/sign-in-locks/",
    "/jobs/",
]
# Every violation is reported twice over: as an event to the page, and as a console message by the browser.
LISTEN = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def reported(page):
    messages = []
    page.add_init_script(LISTEN)
    page.on(
        "console",
        lambda message: (
            messages.append(message.text)
            if "Content Security Policy" in message.text or "Permissions-Policy" in message.text
            else None
        ),
    )
    return messages


def _violations(page) -> list[str]:
    return page.evaluate("window.__violations")


def test_every_main_page_loads_without_a_policy_violation(live_server, page, reported, make_user, sign_in):
    dn = "CN=Ann Archer,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
    mailbox = Mailbox.objects.create(
        dn=dn, dn_norm=normalize_dn(dn), upn="ann.archer@corp.example.com", display_name="Ann Archer",
        search_name="ann archer", primary_smtp="ann.archer@corp.example.com", in_ad=True, in_exo=True,
    )  # fmt: skip
    make_user("root", Role.ADMIN)

    for path in ("/django-admin/login/", "/login/"):
        response = page.goto(live_server.url + path)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert _violations(page) == [], path
    sign_in("root")

    for path in ADMIN_PAGES:
        response = page.goto(live_server.url + path.format(pk=mailbox.pk))
        assert response.status == 200, path
        assert "no-store" in response.headers["cache-control"], path
        page.wait_for_load_state("load")
        assert _violations(page) == [], path
        # htmx's indicator <style> stays out (includeIndicatorStyles: false); pages bring no <style> of their own
        # (django-rq's dashboard does, under its own policy: portal.settings.CONTENT_SECURITY_POLICY_JOBS).
        if not path.startswith("/jobs/"):
            assert page.evaluate("document.querySelectorAll('style').length") == 0, path
    assert reported == []


def test_htmx_still_works_under_the_policy(live_server, page, reported, make_user, sign_in):
    for name in ("Ann Archer", "Finn Fisher"):
        dn = f"CN={name},OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
        Mailbox.objects.create(
            dn=dn, dn_norm=normalize_dn(dn), upn=f"{name.split()[0].lower()}@corp.example.com", display_name=name,
            search_name=name.lower(), in_ad=True, in_exo=True,
        )  # fmt: skip
    make_user("root", Role.ADMIN)
    sign_in("root")

    # An htmx GET on typing: the list narrows without a submit.
    page.goto(live_server.url + "/mailboxes/")
    page.get_by_role("link", name="Finn Fisher").wait_for()
    page.fill("#id_q", "ann")
    page.get_by_role("link", name="Finn Fisher").wait_for(state="detached")
    assert page.get_by_role("link", name="Ann Archer").is_visible()

    # An htmx POST (CSRF token through hx-headers): the connection test binds to the test directory.
    page.goto(live_server.url + "/settings/connections/")
    before = page.locator("#connection-test-result").inner_text()
    page.locator("#connection-test-result").evaluate("node => node.setAttribute('data-original', 'yes')")
    page.get_by_role("button", name="Test connection").click()
    page.locator("#connection-test-result:not([data-original])").wait_for()
    assert page.locator("#connection-test-result").inner_text() != before
    assert _violations(page) == [] and reported == []


@pytest.mark.parametrize("width", [1280, 390])
def test_the_sign_in_locks_page_and_the_lock_message_fit_a_phone_and_a_desktop(
    live_server, page, make_user, sign_in, width
):
    from django.test import Client

    make_user("alice", Role.HELPDESK)
    make_user("root", Role.ADMIN)
    client = Client()
    for i in range(5):
        client.post("/login/", {"username": "alice", "password": "wrong"}, REMOTE_ADDR=f"198.51.100.{i + 1}")
    page.set_viewport_size({"width": width, "height": 800})
    folder = ARTIFACTS / f"sign_in_locks_{width}"
    folder.mkdir(parents=True, exist_ok=True)

    page.goto(live_server.url + "/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    assert page.get_by_role("alert").inner_text().startswith("Too many failed sign-ins")
    page.screenshot(path=str(folder / "01-locked.png"), full_page=True)

    sign_in("root")
    page.goto(live_server.url + "/settings/sign-in-locks/")
    row = page.get_by_test_id("signin-locks").locator("tbody tr").first
    assert "alice" in row.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(folder / "02-locks.png"), full_page=True)
    row.locator("input[name=reason]").fill("ticket 4711")
    row.get_by_role("button", name="Release alice").click()
    page.get_by_text("Released the sign-in lock on user name alice.").wait_for()
    page.screenshot(path=str(folder / "03-released.png"), full_page=True)
