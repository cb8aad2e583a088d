"""Browser journey: help desk finds a mailbox by an alias prefix (live search) and opens its two-sided view."""

import pytest

from portal.dn import normalize_dn
from portal.roles import Role
from soa.choices import Authority
from soa.models import Mailbox, MailboxAddress

pytestmark = pytest.mark.browser
SALES = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"


def _mailbox(name: str, ou: str, alias: str, **fields) -> Mailbox:
    dn = f"CN={name},{ou}"
    mailbox = Mailbox.objects.create(
        dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(ou), upn=f"{alias}@corp.example.com", display_name=name,
        search_name=name.lower(), primary_smtp=f"{alias}@corp.example.com", in_ad=True, in_exo=True, **fields,
    )  # fmt: skip
    MailboxAddress.objects.create(mailbox=mailbox, prefix="smtp", address=f"{alias}@corp.example.com", is_primary=True)
    MailboxAddress.objects.create(mailbox=mailbox, prefix="smtp", address=f"team-{alias}@corp.example.com")
    return mailbox


def test_helpdesk_finds_a_mailbox_by_alias_and_opens_it(live_server, page, screenshot, make_user, sign_in):
    _mailbox("Ann Archer", SALES, "ann.archer", authority=Authority.CLOUD, drift=["CustomAttribute1"], has_drift=True,
             exo_values={"CustomAttribute1": "Cloud value"}, ad_values={"CustomAttribute1": "AD value"})  # fmt: skip
    _mailbox("Finn Fisher", "OU=Finance,OU=Corp,DC=corp,DC=example,DC=com", "finn.fisher")
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    sign_in("helen")
    page.get_by_role("link", name="Mailboxes", exact=True).click()
    page.wait_for_url(live_server.url + "/mailboxes/")
    assert page.get_by_test_id("mailbox-count").inner_text() == "1 mailbox"  # Finance is outside her scope
    screenshot("mailbox-list")

    page.fill("#id_q", "team-ann")  # live search through htmx, no submit
    page.get_by_role("link", name="Ann Archer").wait_for()
    assert page.get_by_test_id("mailbox-count").inner_text() == "1 mailbox"
    page.fill("#id_q", "team-finn")
    page.get_by_text("No mailbox in your scope matches").wait_for()
    screenshot("search-outside-scope")

    page.fill("#id_q", "ann.arch")
    page.get_by_role("link", name="Ann Archer").click()
    assert page.get_by_test_id("authority").inner_text() == "Exchange Online is authority"
    assert page.locator("tr.drift").count() == 1
    screenshot("mailbox-detail")


def test_admin_queues_an_import_and_watches_the_page(live_server, page, screenshot, make_user, sign_in):
    make_user("root", Role.ADMIN)
    sign_in("root")
    page.get_by_role("link", name="Inventory").click()
    assert "No import has run yet" in page.content()
    assert page.get_by_role("button", name="Import changes since the last run").is_disabled()
    screenshot("inventory-empty")
    page.get_by_role("button", name="Start a full import").click()
    page.get_by_test_id("current-run").wait_for()
    assert "Queued" in page.get_by_test_id("current-run").inner_text()
    screenshot("inventory-queued")


@pytest.mark.parametrize("width", [1280, 390])
def test_a_list_beyond_the_count_cap_says_more_than_and_pages_on(
    live_server, page, screenshot, make_user, sign_in, monkeypatch, width
):
    """Above the list's count cap the page says "more than" and its Next and Previous links still walk the list."""
    from soa import selectors, views

    monkeypatch.setattr(selectors, "COUNT_CAP", 5)
    monkeypatch.setattr(views, "PAGE_SIZE", 4)
    for index in range(9):
        _mailbox(f"User {index:02d} Sales", SALES, f"user.{index:02d}")
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    page.set_viewport_size({"width": width, "height": 800})
    sign_in("helen")
    page.goto(live_server.url + "/mailboxes/")
    count = page.get_by_test_id("mailbox-count")
    assert count.inner_text() == "More than 5 mailboxes: narrow the search to count them"
    assert count.is_visible()
    screenshot(f"capped-{width}")
    names = []
    for _ in range(3):
        names += page.locator("tbody tr td:first-child").all_inner_texts()
        if not page.get_by_role("link", name="Next").count():
            break
        page.get_by_role("link", name="Next").click()
        page.wait_for_load_state()
    assert names == [f"User {index:02d} Sales" for index in range(9)]  # every row once, in order
    screenshot(f"last-page-{width}")
    page.get_by_role("link", name="Previous").click()
    page.wait_for_load_state()
    assert page.locator("tbody tr td:first-child").all_inner_texts()[0] == "User 04 Sales"
    page.fill("#id_q", "user 0")  # live search: nine matches, still above the cap
    page.get_by_test_id("mailbox-count").wait_for()
    assert "More than 5" in page.get_by_test_id("mailbox-count").inner_text()
