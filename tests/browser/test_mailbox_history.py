"""Browser journey: the auditor opens a mailbox, reads its timeline, views it as of a past moment (and before its
history starts), and compares two moments.

The mailbox's history: a wave's snapshot of both sides at submission, a help-desk edit requested (its event holds the
values it was checked against), then the inventory reading a new value that an administrator set in AD directly
(the import audits no values, so the portal's record is the only trace of it).
"""

import time

import pytest
from django.db import transaction
from django.utils import timezone

from portal.roles import Role
from soa.choices import Authority
from soa.models import Mailbox
from soa.services.accepted_domains import accepted_domains_replace
from soa.services.changes import change_request_create
from tests.browser.conftest import serious_violations
from tests.soa.test_undo import applied_edit
from tests.soa.test_wave_support import DOMAIN, make_mailbox, submitted_wave

pytestmark = pytest.mark.browser


def _seconds(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def test_auditor_reads_the_timeline_a_past_moment_and_a_comparison(
    live_server, page, screenshot, make_user, sign_in, axe_source
):
    ann = make_mailbox("Ann Archer")
    submitted_wave(make_user("olga", Role.WAVE_OPERATOR), ann)
    time.sleep(1.1)
    middle = timezone.now().replace(microsecond=0)
    time.sleep(1.1)
    change_request_create(
        actor=make_user("hugo", Role.HELPDESK), mailbox_id=ann.pk, reason="ticket 77", base_version=ann.version,
        operations=[{"op": "set_custom_attribute", "attribute": "CustomAttribute3", "value": "desk 12"}],
        idempotency_key="browser-history-1",
    )  # fmt: skip
    time.sleep(1.1)
    ann = Mailbox.objects.get(pk=ann.pk)
    ann.ad_values = {**ann.ad_values, "CustomAttribute1": "contractor"}
    ann.exo_values = {**ann.exo_values, "CustomAttribute1": "contractor"}
    ann.save()
    make_user("audrey", Role.AUDITOR)

    sign_in("audrey")
    page.goto(f"{live_server.url}/mailboxes/{ann.pk}/")
    page.get_by_test_id("history-link").click()
    page.wait_for_url(f"{live_server.url}/mailboxes/{ann.pk}/history/")
    event = page.locator("[data-testid=event][data-action='soa.change.requested']")
    event.locator("summary").click()
    diff = event.get_by_test_id("event-diff")
    diff.wait_for()
    assert "desk 12" in diff.inner_text() and "ticket 77" in event.inner_text()
    screenshot("timeline")
    assert serious_violations(page, axe_source) == []

    page.get_by_role("link", name="As of a moment").click()
    page.fill("#id_at", _seconds(middle))
    page.get_by_role("button", name="Show").click()
    values = page.get_by_test_id("as-of-values")
    values.wait_for()
    custom = page.locator("#as-of-CustomAttribute1")
    assert "staff" in custom.inner_text() and "snapshot at submission" in custom.inner_text()
    assert "Active Directory" in page.get_by_test_id("authority-as-of").inner_text()
    screenshot("as-of")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        assert serious_violations(page, axe_source) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.set_viewport_size({"width": 1280, "height": 900})

    page.fill("#id_at", "2020-01-01T00:00:00")
    page.get_by_role("button", name="Show").click()
    page.get_by_test_id("before-history").wait_for()
    assert "does not show" in page.locator("#as-of-CustomAttribute1").inner_text()
    screenshot("before-history")

    page.get_by_role("link", name="Compare two moments").click()
    page.wait_for_url("**/history/compare/")
    page.fill("#id_earlier", _seconds(middle))
    page.fill("#id_later", _seconds(timezone.now()))
    page.get_by_role("button", name="Show").click()
    rows = page.get_by_test_id("difference")
    rows.first.wait_for()
    text = page.get_by_test_id("differences").inner_text()
    assert "Custom attribute 1" in text and "staff" in text and "contractor" in text
    screenshot("compare")
    assert serious_violations(page, axe_source) == []


def test_help_desk_finds_the_undo_of_its_edit_on_the_timeline(
    live_server, page, screenshot, make_user, sign_in, axe_source
):
    """Help desk has no audit list: the timeline's link is its way to undo an edit, at both widths."""
    with transaction.atomic():
        accepted_domains_replace(domains=[{"DomainName": DOMAIN, "DomainType": "Authoritative", "Default": True}],
                                 fetched_at=timezone.now())  # fmt: skip
    tess = make_mailbox("Tess Timeline", authority=Authority.CLOUD)
    event = applied_edit(make_user("hugo", Role.HELPDESK), tess)
    sign_in("hugo")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{live_server.url}/mailboxes/{tess.pk}/history/")
        row = page.locator(f"#event-{event.pk}")
        row.locator("summary").click()
        link = row.get_by_test_id("event-undo")
        link.wait_for()
        screenshot(f"timeline-{width}")
        assert serious_violations(page, axe_source) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    link.click()
    page.wait_for_url(f"{live_server.url}/audit/events/{event.pk}/undo/")
    screenshot("undo-page-390")
