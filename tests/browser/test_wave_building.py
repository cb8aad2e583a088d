"""Browser journey: an operator builds a draft without dead ends: "Add matching" says how many mailboxes it would
add and adds them once confirmed; "select all" picks every member to remove; the settings change on their page; a
rejected wave is copied into a new draft, whose history says so."""

import pytest

from portal.roles import Role
from soa.models import PilotWave
from soa.services.approvals import wave_reject
from soa.services.waves import wave_submit
from tests.soa.test_wave_support import SALES, make_mailbox, new_wave

pytestmark = pytest.mark.browser


def test_an_operator_adds_by_filter_after_seeing_the_count_and_removes_all_at_once(
    live_server, page, screenshot, make_user, sign_in
):
    for name in ("Ann Archer", "Bob Baker", "Cid Cole"):
        make_mailbox(name, SALES)
    operator = make_user("olga", Role.WAVE_OPERATOR)
    wave = new_wave(operator, name="Sales pilot")
    sign_in("olga")
    page.goto(f"{live_server.url}/waves/{wave.pk}/")
    page.fill("#id_filter-ou", SALES)
    page.get_by_role("button", name="Add matching").click()
    preview = page.get_by_test_id("filter-preview")
    assert "3 mailboxes" in preview.inner_text() and PilotWave.objects.get(pk=wave.pk).members.count() == 0
    screenshot("add-matching-asks")
    page.get_by_test_id("confirm-add-matching").click()
    page.get_by_text("Added 3 mailboxes").wait_for()
    assert wave.members.count() == 3

    select_all = page.get_by_label("Select every member shown")
    select_all.check()
    assert page.locator("#wave-members input[name=mailbox]:checked").count() == 3
    page.locator("#wave-members input[name=mailbox]").first.uncheck()
    assert select_all.evaluate("el => el.indeterminate")  # some, not all
    select_all.check()
    screenshot("all-selected")
    page.get_by_role("button", name="Remove selected").click()
    page.get_by_text("Removed 3 members").wait_for()
    assert wave.members.count() == 0


def test_a_rejected_wave_is_copied_and_its_copy_changes_settings(live_server, page, screenshot, make_user, sign_in):
    operator = make_user("olga", Role.WAVE_OPERATOR)
    approver = make_user("anna", Role.APPROVER)
    wave = new_wave(operator, make_mailbox("Ann Archer", SALES), name="Q3 pilot")
    wave_submit(actor=operator, wave_id=wave.pk)
    wave_reject(actor=approver, wave_id=wave.pk, reason="after the audit")
    sign_in("olga")
    page.goto(f"{live_server.url}/waves/{wave.pk}/")
    assert "after the audit" in page.get_by_test_id("wave-history").inner_text()
    page.get_by_role("button", name="Copy into a new draft").click()
    page.get_by_text("created from “Q3 pilot” with 1 of its member").wait_for()
    copy = PilotWave.objects.get(name="Q3 pilot (copy)")
    assert page.url == f"{live_server.url}/waves/{copy.pk}/"
    page.get_by_test_id("edit-settings").click()
    page.fill("#id_batch_size", "10")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved: Batch size.").wait_for()
    history = page.get_by_test_id("wave-history").inner_text()
    assert "Created as a copy" in history and "Settings changed" in history
    screenshot("copy-history")
    copy.refresh_from_db()
    assert copy.batch_size == 10
