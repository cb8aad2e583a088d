"""A Chromium journey per role through issue 14's everyday use: each lands on the dashboard part that awaits it,
finds what it needs, and never meets a dead end. Screenshots are kept under test-results/ at 1,280 and 390 px.

- help desk: its edits on the dashboard; a surname finds the person; the list sorts by a heading; Back after opening
  a result shows the whole list again; a mailbox outside its scope answers "not in your scope".
- operator: its waves on the dashboard, the count linking to its own list; the wave's history.
- approver: the wave awaiting its decision, "0 of 2" approvals; after approving, waiting for others.
- auditor: the chain's last verification; the audit list filtered by a mailbox's address, naming the mailbox,
  showing what changed.
- admin: the import and job tiles; a page that does not exist answers in the portal's layout.
"""

import pytest
from django.db import transaction

from portal.audit import audit_record
from portal.roles import Role
from soa.choices import ChangeRoute, ChangeState
from soa.models import ChangeRequest
from tests.soa.test_wave_support import FINANCE, SALES, make_mailbox, submitted_wave

pytestmark = pytest.mark.browser


@pytest.fixture
def tenant(make_user):
    from soa.name_words import name_words_replace

    ann = make_mailbox("Ann Archer", SALES, aliases=("team-ann@corp.example.com",), department="Sales")
    bob = make_mailbox("Bob Baker", SALES, department="Field Sales")
    finn = make_mailbox("Finn Fisher", FINANCE, department="Finance")
    for mailbox in (ann, bob, finn):
        mailbox.search_name = mailbox.display_name.lower()
        mailbox.save(update_fields=["search_name"])
    name_words_replace([ann, bob, finn])
    people = {
        "helpdesk": make_user("helen", Role.HELPDESK, scopes=(SALES,)),
        "operator": make_user("olga", Role.WAVE_OPERATOR),
        "approver": make_user("anna", Role.APPROVER),
        "auditor": make_user("audrey", Role.AUDITOR),
        "admin": make_user("root", Role.ADMIN),
    }
    change = ChangeRequest.objects.create(
        mailbox=ann, requested_by=people["helpdesk"], operations=[], desired={"CustomAttribute1": "x"},
        before={"CustomAttribute1": "staff"}, base_version=ann.version, state=ChangeState.PENDING_APPROVAL,
        route=ChangeRoute.EXO_THEN_AD, idempotency_key="journey-1",
    )  # fmt: skip
    with transaction.atomic():  # as the service records a request
        audit_record(actor=people["helpdesk"], action="soa.change.requested", obj=change,
                     before={"CustomAttribute1": "staff"}, after={"CustomAttribute1": "x"})  # fmt: skip
    wave = submitted_wave(people["operator"], ann, bob, name="Sales pilot", required_approvals=2)
    return {"ann": ann, "finn": finn, "wave": wave, **people}


def _both_widths(page, screenshot, label):
    screenshot(f"{label}-1280")
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), f"{label} scrolls sideways"
    screenshot(f"{label}-390")
    page.set_viewport_size({"width": 1280, "height": 800})


def test_help_desk_journey(live_server, page, screenshot, sign_in, tenant):
    sign_in("helen")
    assert "Ann Archer" in page.get_by_test_id("dash-open-edits").inner_text()
    _both_widths(page, screenshot, "dashboard")
    page.get_by_role("link", name="Mailboxes", exact=True).click()
    assert page.get_by_test_id("mailbox-count").inner_text() == "2 mailboxes"  # Finance is outside the scope
    page.fill("#id_q", "ARCH")  # the surname, live search
    page.get_by_test_id("mailbox-count").filter(has_text="1 mailbox").wait_for()
    assert page.locator("#mailbox-results tbody tr").count() == 1
    _both_widths(page, screenshot, "surname-search")
    page.get_by_role("link", name="Ann Archer").click()
    page.go_back()
    page.get_by_role("heading", name="Mailboxes").wait_for()  # the whole page, not a bare fragment
    assert page.locator("link[rel=stylesheet]").count() >= 1 and page.input_value("#id_q") == "ARCH"
    page.goto(f"{live_server.url}/mailboxes/")
    page.get_by_test_id("sort-department").click()
    assert page.locator("tbody tr td:nth-child(3)").all_inner_texts() == ["Field Sales", "Sales"]
    _both_widths(page, screenshot, "sorted-by-department")
    page.goto(f"{live_server.url}/mailboxes/{tenant['finn'].pk}/")
    assert "not in your scope" in page.content()
    _both_widths(page, screenshot, "not-in-scope")


def test_operator_journey(live_server, page, screenshot, sign_in, tenant):
    sign_in("olga")
    operator = page.get_by_test_id("dash-operator")
    assert "Sales pilot" in operator.inner_text()
    _both_widths(page, screenshot, "dashboard")
    page.get_by_test_id("dash-state-submitted").click()
    page.get_by_role("link", name="Sales pilot").wait_for()
    assert "mine=on" in page.url
    page.get_by_role("link", name="Sales pilot").click()
    assert "Submitted for approval" in page.get_by_test_id("wave-history").inner_text()
    _both_widths(page, screenshot, "wave-with-history")


def test_approver_journey(live_server, page, screenshot, sign_in, tenant):
    sign_in("anna")
    assert "0 of 2" in page.get_by_test_id("dash-approver").inner_text()
    _both_widths(page, screenshot, "awaiting-decision")
    page.get_by_test_id("dash-approver").get_by_role("link", name="Sales pilot").click()
    acknowledge = page.locator("#id_acknowledge_warnings")
    if acknowledge.count():  # a wave whose pre-flight found warnings asks for them to be read
        acknowledge.check()
    page.get_by_test_id("approve-form").get_by_role("button", name="Approve").click()
    page.goto(live_server.url + "/")
    assert "Sales pilot" in page.get_by_test_id("dash-decided").inner_text()
    _both_widths(page, screenshot, "approved-waiting-for-others")


def test_auditor_journey(live_server, page, screenshot, sign_in, tenant):
    sign_in("audrey")
    assert "has not been verified" in page.get_by_test_id("dash-chain").inner_text()
    _both_widths(page, screenshot, "dashboard")
    page.goto(f"{live_server.url}/audit/?mailbox=team-ann@")
    assert page.get_by_test_id("event-mailbox").first.inner_text() == "Ann Archer"
    # The help desk's edit is among them (so is the wave that added the mailbox, which the filter also finds).
    assert any("staff" in text for text in page.get_by_test_id("event-diff").all_inner_texts())
    _both_widths(page, screenshot, "audit-by-address")


def test_admin_journey(live_server, page, screenshot, sign_in, tenant):
    sign_in("root")
    assert "No import has run yet" in page.get_by_test_id("tile-import").inner_text()
    assert page.get_by_test_id("tile-queues").count() == 1
    _both_widths(page, screenshot, "dashboard")
    page.goto(f"{live_server.url}/no/such/page/")
    assert page.get_by_role("link", name="Dashboard").count() >= 1  # the portal's layout, with a way back
    _both_widths(page, screenshot, "not-found")
