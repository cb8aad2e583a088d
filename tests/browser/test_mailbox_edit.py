"""Browser journeys of editing on the mailbox page: help desk adds an alias through the preview and the confirmation
and sees the request listed; an approver approves a primary-address change on the same page; an auditor reads it.
Each page is kept at 1,280 and 390 pixels wide."""

import pytest

from portal.roles import Role
from soa.choices import Authority, ChangeState
from soa.models import ChangeRequest
from soa.services.changes import change_request_create
from tests.soa.test_change_requests import accepted_domains_known_now
from tests.soa.test_wave_support import DOMAIN, SALES, make_mailbox

pytestmark = pytest.mark.browser


@pytest.fixture
def tenant(transactional_db):
    accepted_domains_known_now()
    ann = make_mailbox("Ann Archer", SALES, aliases=("ann.old@corp.example.com",), authority=Authority.CLOUD)
    bob = make_mailbox("Bob Baker", SALES, aliases=("bob.sales@corp.example.com",))
    return {"ann": ann, "bob": bob}


def _narrow(page, screenshot, label):
    """The same page as a phone shows it, then back to the desktop width."""
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(f"{label}-390")
    page.set_viewport_size({"width": 1280, "height": 800})


def test_helpdesk_adds_an_alias_through_the_preview_and_sees_the_request(
    live_server, page, screenshot, make_user, sign_in, tenant
):
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    sign_in("helen")
    ann = tenant["ann"]
    page.goto(f"{live_server.url}/mailboxes/{ann.pk}/")
    screenshot("mailbox")
    _narrow(page, screenshot, "mailbox")

    page.get_by_test_id("add-alias").click()
    page.get_by_label("New address").fill("ann@nowhere.example")
    page.get_by_test_id("preview-change").click()
    page.get_by_test_id("field-error").wait_for()
    assert page.get_by_label("New address").get_attribute("aria-invalid") == "true"
    screenshot("validation-error")

    page.get_by_label("New address").fill(f"ann.archer2@{DOMAIN}")
    page.get_by_test_id("preview-change").click()
    page.get_by_test_id("change-preview").wait_for()
    assert f"smtp:ann.archer2@{DOMAIN}" in page.get_by_test_id("change-preview").inner_text()
    assert page.get_by_test_id("change-route").inner_text() == "Written to: Exchange Online, then Active Directory."
    assert not ChangeRequest.objects.exists()
    screenshot("preview")
    _narrow(page, screenshot, "preview")

    page.get_by_label("Reason (required)").fill("ticket 4711: new team address")
    page.get_by_test_id("confirm-change").click()
    page.get_by_test_id("change-created").wait_for()
    change = ChangeRequest.objects.get()
    listed = page.get_by_test_id(f"change-{change.pk}")
    listed.wait_for()
    assert "Ready to apply" in listed.inner_text() and "ticket 4711" in listed.inner_text()
    assert page.locator("a[href*='/edit/']").count() == 0  # one open request per mailbox
    screenshot("requested")
    _narrow(page, screenshot, "requested")


def test_an_approver_approves_a_primary_change_on_the_mailbox_page(
    live_server, page, screenshot, make_user, sign_in, tenant
):
    helen = make_user("helen", Role.HELPDESK)
    make_user("anna", Role.APPROVER)
    bob = tenant["bob"]
    change = change_request_create(
        actor=helen, mailbox_id=bob.pk, operations=[{"op": "make_primary", "address": f"bob.sales@{DOMAIN}"}],
        reason="Bob moves to Sales", base_version=bob.version, idempotency_key="browser-1",
    )  # fmt: skip
    sign_in("anna")
    page.goto(f"{live_server.url}/mailboxes/{bob.pk}/")
    listed = page.get_by_test_id(f"change-{change.pk}")
    assert "Awaiting approval" in listed.inner_text()
    screenshot("pending")
    _narrow(page, screenshot, "pending")

    listed.get_by_role("link", name="Approve…").click()
    page.get_by_test_id("decision-form").wait_for()
    screenshot("approve-form")
    page.get_by_test_id("decision-form").get_by_role("button", name="Approve").click()
    page.get_by_test_id("change-decided").wait_for()
    change.refresh_from_db()
    assert change.state == ChangeState.APPROVED
    screenshot("approved")


def test_an_auditor_reads_the_changes_without_any_edit(live_server, page, screenshot, make_user, sign_in, tenant):
    helen = make_user("helen", Role.HELPDESK)
    make_user("audrey", Role.AUDITOR)
    bob = tenant["bob"]
    change_request_create(
        actor=helen, mailbox_id=bob.pk, operations=[{"op": "set_custom_attribute", "attribute": "CustomAttribute4",
                                                     "value": "Building 2"}],
        reason="moved desks", base_version=bob.version, idempotency_key="browser-2",
    )  # fmt: skip
    sign_in("audrey")
    page.goto(f"{live_server.url}/mailboxes/{bob.pk}/")
    assert page.get_by_test_id("mailbox-changes").is_visible()
    assert page.locator("a[href*='/edit/']").count() == 0
    assert page.locator("a[href*='/cancel/']").count() == 0
    screenshot("auditor")
    _narrow(page, screenshot, "auditor")
