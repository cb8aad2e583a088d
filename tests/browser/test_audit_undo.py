"""Browser journey of undo from history: an admin finds an applied edit in the audit log, opens its undo, sees what
it restores and that the value changed again since, acknowledges and asks for the undo; the auditor sees the same
log without any undo link. Each page is kept at 1,280 and 390 pixels wide."""

import pytest

from portal.roles import Role
from soa.choices import Authority, ChangeState
from soa.models import ChangeRequest
from tests.soa.test_undo import _edit, _set
from tests.soa.test_wave_support import SALES, make_mailbox

pytestmark = pytest.mark.browser


@pytest.fixture
def edited(transactional_db, make_user):
    ann = make_mailbox("Ann Archer", SALES, authority=Authority.CLOUD)
    helper, other = make_user("hedda", Role.HELPDESK), make_user("hank", Role.HELPDESK)
    first = _edit(helper, ann, [_set("CustomAttribute4", "contractor")])
    _edit(other, ann, [_set("CustomAttribute4", "intern")])
    return {"ann": ann, "edit": first}


def _narrow(page, screenshot, label):
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(f"{label}-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{label} scrolls sideways on a phone"
    page.set_viewport_size({"width": 1280, "height": 800})


def test_an_admin_undoes_an_edit_from_the_audit_log_acknowledging_the_conflict(
    live_server, page, screenshot, make_user, sign_in, edited
):
    make_user("adele", Role.ADMIN)
    sign_in("adele")
    page.goto(f"{live_server.url}/audit/?action=soa.change.applied")
    screenshot("audit-log")
    _narrow(page, screenshot, "audit-log")
    page.locator(f'a[href="/audit/events/{edited["edit"].pk}/undo/"]').click()
    page.get_by_test_id("undo-conflict-warning").wait_for()
    screenshot("undo-confirm")
    _narrow(page, screenshot, "undo-confirm")
    page.fill("#id_reason", "the contract was never signed")
    page.check("#id_acknowledge_conflicts")
    page.get_by_role("button", name="Ask for the undo").click()
    page.get_by_test_id("undo-done").wait_for()
    screenshot("undo-done")
    change = ChangeRequest.objects.get(requested_by__username="adele")
    assert change.desired == {"CustomAttribute4": None} and change.state == ChangeState.VALIDATED


def test_the_auditor_reads_the_log_without_any_undo(live_server, page, screenshot, make_user, sign_in, edited):
    make_user("audra", Role.AUDITOR)
    sign_in("audra")
    page.goto(f"{live_server.url}/audit/")
    screenshot("auditor-log")
    assert page.get_by_test_id("event-undo").count() == 0
    page.goto(f"{live_server.url}/audit/events/{edited['edit'].pk}/undo/")
    assert "Not allowed" in page.content()
