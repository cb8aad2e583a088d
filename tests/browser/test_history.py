"""Back and Forward after a live search show the whole, styled page (issue: Back showed a bare, unstyled fragment).

The mailbox and audit lists push each search's URL (hx-push-url) and answer htmx with the results fragment alone.
Three ways back to such a URL: the browser loads it again (the portal's pages are no-store); the browser reuses a
copy it kept (a deployment whose caching lets it): the fragment must not be that copy (Vary: HX-Request); htmx
restores it within the same page: it reloads the whole page instead of asking for a fragment or keeping a copy of
the page in sessionStorage (base.html's htmx-config).
"""

import pytest

from portal.dn import normalize_dn
from portal.models import AuditEvent
from portal.roles import Role
from soa.models import Mailbox

pytestmark = pytest.mark.browser
SALES = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
TOPBAR_BACKGROUND = "rgb(16, 42, 67)"  # portal.css's .topbar: the stylesheet applies


@pytest.fixture
def tenant(db):
    for name in ("Ann Archer", "Finn Fisher"):
        dn = f"CN={name},{SALES}"
        Mailbox.objects.create(
            dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(SALES), display_name=name,
            upn=f"{name.split()[0].lower()}@corp.example.com", search_name=name.lower(), in_ad=True, in_exo=True,
        )  # fmt: skip


@pytest.fixture
def pages_kept_by_the_browser(monkeypatch):
    """Answer signed-in pages as cacheable (private, ten minutes) instead of no-store, as a deployment might."""
    from portal import middleware

    def keep(response, **kwargs):
        response["Cache-Control"] = "private, max-age=600"

    monkeypatch.setattr(middleware, "patch_cache_control", keep)


def _assert_whole_styled_page(page, heading: str) -> None:
    assert page.locator("h1").first.inner_text() == heading
    assert page.locator("header.topbar").count() == 1 and page.locator("nav[aria-label=Main]").is_visible()
    background = page.evaluate("getComputedStyle(document.querySelector('header.topbar')).backgroundColor")
    assert background == TOPBAR_BACKGROUND


def _search_mailboxes(page, live_server, text: str) -> None:
    page.fill("#id_q", text)
    page.wait_for_url(f"**/mailboxes/?q={text}*")
    page.get_by_test_id("mailbox-count").get_by_text("1 mailbox").wait_for()


@pytest.mark.parametrize("cache", ["no-store", "kept"])
def test_back_after_a_live_mailbox_search_and_opening_a_result_shows_the_whole_list(
    live_server, page, screenshot, tenant, make_user, sign_in, request, cache
):
    if cache == "kept":
        request.getfixturevalue("pages_kept_by_the_browser")
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    sign_in("helen")
    page.goto(live_server.url + "/mailboxes/")
    _search_mailboxes(page, live_server, "finn")
    page.get_by_role("link", name="Finn Fisher").click()
    page.wait_for_url(live_server.url + "/mailboxes/*/")
    screenshot("opened")

    page.go_back()
    page.wait_for_url("**/mailboxes/?q=finn*")
    _assert_whole_styled_page(page, "Mailboxes")
    assert page.input_value("#id_q") == "finn"
    assert page.get_by_role("link", name="Finn Fisher").is_visible()
    assert page.get_by_role("link", name="Ann Archer").count() == 0
    screenshot("back-to-the-search")

    page.go_forward()
    page.wait_for_url(live_server.url + "/mailboxes/*/")
    assert page.locator("h1").first.inner_text().startswith("Finn Fisher")


@pytest.mark.parametrize("cache", ["no-store", "kept"])
def test_back_after_filtering_the_audit_log_and_leaving_shows_the_whole_log(
    live_server, page, screenshot, make_user, sign_in, request, cache
):
    if cache == "kept":
        request.getfixturevalue("pages_kept_by_the_browser")
    make_user("audrey", Role.AUDITOR)
    assert AuditEvent.objects.filter(action="portal.role.assigned").exists()
    sign_in("audrey")
    page.goto(live_server.url + "/audit/")
    page.fill("#id_action", "portal.role")
    page.locator("form.filters").get_by_role("button", name="Filter").click()
    page.wait_for_url("**/audit/?*action=portal.role*")
    page.get_by_test_id("audit-count").wait_for()
    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(live_server.url + "/")

    page.go_back()
    page.wait_for_url("**/audit/?*action=portal.role*")
    _assert_whole_styled_page(page, "Audit log")
    assert page.input_value("#id_action") == "portal.role"
    assert "portal.role.assigned" in page.locator("#audit-results").inner_text()
    screenshot("back-to-the-filtered-log")


def test_back_within_the_page_reloads_the_whole_page_and_keeps_no_copy_in_session_storage(
    live_server, page, screenshot, tenant, make_user, sign_in
):
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    sign_in("helen")
    page.goto(live_server.url + "/mailboxes/")
    _search_mailboxes(page, live_server, "ann")
    _search_mailboxes(page, live_server, "finn")
    # htmx kept no snapshot of the signed-in page: it could outlive the page (the tab's sessionStorage).
    assert page.evaluate("sessionStorage.getItem('htmx-history-cache')") is None
    # Any snapshot htmx might have is gone (evicted after ten searches, too large for the storage): Back must still
    # give the whole page, not the fragment htmx would fetch for a missing snapshot.
    page.evaluate("sessionStorage.clear()")

    page.go_back()
    page.wait_for_url("**/mailboxes/?q=ann*")
    page.get_by_role("link", name="Ann Archer").wait_for()
    _assert_whole_styled_page(page, "Mailboxes")
    assert page.input_value("#id_q") == "ann"
    assert page.get_by_role("link", name="Finn Fisher").count() == 0
    screenshot("back-within-the-page")
