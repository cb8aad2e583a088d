"""Browser journey: an operator builds and submits a pilot wave; another user, an approver, approves it."""

import pytest

from portal.roles import Role
from tests.soa.test_wave_support import FINANCE, make_mailbox

pytestmark = pytest.mark.browser


def test_operator_builds_and_submits_a_wave_and_an_approver_approves_it(
    live_server, page, screenshot, make_user, sign_in
):
    # Ready to move: in AD and EXO, dir-synced, user mailboxes mastered on-prem, last changed days ago.
    make_mailbox("Ann Archer")
    make_mailbox("Abe Adams")
    make_mailbox("Finn Fisher", FINANCE)
    make_user("olga", Role.WAVE_OPERATOR)
    make_user("anna", Role.APPROVER)

    sign_in("olga")
    page.get_by_role("link", name="Waves", exact=True).click()
    page.wait_for_url(live_server.url + "/waves/")
    page.get_by_text("No pilot wave yet").wait_for()
    screenshot("wave-list-empty")

    page.get_by_role("link", name="New wave").click()
    page.fill("#id_name", "Sales pilot")
    page.select_option("#id_direction", "TO_CLOUD")
    page.fill("#id_description", "First Sales mailboxes to the cloud.")
    screenshot("wave-create")
    page.get_by_role("button", name="Create draft").click()
    page.get_by_text("Draft wave “Sales pilot” created").wait_for()
    assert page.get_by_test_id("wave-state").inner_text() == "Draft"
    screenshot("wave-draft")

    page.fill("#id_q", "a")  # live search through htmx: the two A names, not Finn
    page.get_by_test_id("picker").wait_for()
    assert page.get_by_test_id("picker").locator("tbody tr").count() == 2
    page.get_by_label("Ann Archer").check()
    page.get_by_label("Abe Adams").check()
    screenshot("wave-picker")
    page.get_by_role("button", name="Add selected").click()
    page.get_by_text("Added 2 mailboxes").wait_for()
    assert page.get_by_test_id("members").locator("tbody tr").count() == 2

    page.get_by_role("link", name="Run pre-flight").click()
    page.get_by_test_id("preflight-summary").wait_for()
    assert "2 to move, 0 excluded" in page.get_by_test_id("preflight-summary").inner_text()
    screenshot("wave-preflight")

    page.get_by_role("link", name="Submit for approval…").click()
    assert "2 to move" in page.get_by_test_id("confirm-summary").inner_text()
    screenshot("wave-submit-confirm")
    page.get_by_role("button", name="Submit for approval").click()
    page.get_by_text("is submitted for approval").wait_for()
    assert page.get_by_test_id("wave-state").inner_text() == "Submitted"
    assert page.get_by_test_id("approve-form").count() == 0  # the submitter never decides
    screenshot("wave-submitted")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(live_server.url + "/login/")
    sign_in("anna")
    page.get_by_role("link", name="Waves", exact=True).click()
    page.get_by_role("link", name="Sales pilot").click()
    assert "frozen at submission" in page.content()
    screenshot("approver-sees-wave")
    page.get_by_test_id("approve-form").get_by_label("Comment (optional)").fill("Checked the report.")
    page.get_by_role("button", name="Approve", exact=True).click()
    page.get_by_text("Your approval of “Sales pilot” is recorded").wait_for()
    assert page.get_by_test_id("wave-state").inner_text() == "Approved"
    assert "Checked the report." in page.get_by_test_id("approvals").inner_text()
    assert page.get_by_test_id("approve-form").count() == 0
    screenshot("wave-approved")


def test_a_member_list_with_many_bad_lines_shows_the_first_hundred(live_server, page, screenshot, make_user, sign_in):
    from soa.services.wave_members import PROBLEMS_SHOWN
    from soa.services.waves import wave_create

    operator = make_user("olga", Role.WAVE_OPERATOR)
    wave = wave_create(actor=operator, name="Long list", direction="TO_CLOUD")
    make_mailbox("Ann Archer")
    lines = "\n".join(f"someone.with.a.rather.long.name{n}@corp.example.com" for n in range(PROBLEMS_SHOWN + 40))
    sign_in("olga")
    page.goto(f"{live_server.url}/waves/{wave.pk}/")
    page.fill("#id_text", lines)
    page.get_by_role("button", name="Add from list").click()
    page.get_by_test_id("csv-problems-more").wait_for()
    assert (
        f"The first {PROBLEMS_SHOWN} of {PROBLEMS_SHOWN + 40} lines"
        in page.get_by_test_id("csv-problems-more").inner_text()
    )
    assert page.get_by_test_id("csv-problems").locator("tbody tr").count() == PROBLEMS_SHOWN
    screenshot("wave-csv-problems")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot("wave-csv-problems-390")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the wave page is {width} px wide at 390"
