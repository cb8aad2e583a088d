"""Browser journey: an administrator records Entra Connect's version and picks the canary on the readiness page's
prerequisites section (the canary needs its confirmation box ticked); an auditor sees the same results without the
forms. Each state kept at 1,280 and 390 px."""

import django_rq
import pytest

from portal.roles import Role
from soa import jobs
from soa.models import PrerequisiteCheck
from tests.soa.test_wave_support import make_mailbox

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WIDTHS = (1280, 390)


def _both_widths(page, screenshot, label: str) -> None:
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.locator("#prerequisites").scroll_into_view_if_needed()
        full = screenshot(f"{label}-{width}")
        page.locator("#prerequisites").screenshot(path=str(full.with_name(f"{full.stem}-section.png")))
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"{label} at {width}"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_admin_records_the_version_and_picks_the_canary_and_the_auditor_only_reads(
    live_server, page, screenshot, make_user, sign_in, settings
):
    settings.ENTRA_CONNECT_MIN_VERSION = "2.5.76.0"
    django_rq.get_queue(jobs.QUEUE).empty()
    canary = make_mailbox("Canary Carl")
    PrerequisiteCheck.objects.create(
        key="connect_sync", status="not_met", source="Microsoft Graph GET /v1.0/organization",
        measured="Last synced 2026-11-30 06:00 UTC, 6 h 0 min before the check: older than the 3 h allowed.",
    )  # fmt: skip
    PrerequisiteCheck.objects.create(key="writeback", status="unknown", measured="The source could not be read.",
                                     source="AD (directory settings)", error="bind refused")  # fmt: skip
    make_user("adam", Role.ADMIN)
    sign_in("adam")
    page.goto(live_server.url + "/mailboxes/readiness/#prerequisites")
    section = page.get_by_test_id("rd-prerequisites")
    assert "Prerequisites: 0 of 4 met" in section.inner_text()
    _both_widths(page, screenshot, "admin-before")

    page.fill("#id_version", "2.5.190.0")
    page.fill("#id_seen_where", "SYNC01: Get-ADSyncGlobalSettings")
    page.get_by_role("button", name="Record version").click()
    page.wait_for_url("**/mailboxes/readiness/#prerequisites")
    assert page.get_by_test_id("rd-prereq-connect_version").get_attribute("data-status") == "met"

    page.fill("#id_identity", canary.upn)
    page.get_by_role("button", name="Check the role").click()  # the box is not ticked: the browser stops it
    assert page.get_by_role("checkbox").evaluate("box => box.validity.valueMissing")
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Check the role").click()
    page.wait_for_url("**/mailboxes/readiness/#prerequisites")
    assert "is the canary" in page.locator(".messages").inner_text()
    _both_widths(page, screenshot, "admin-after")

    make_user("audrey", Role.AUDITOR)
    page.context.clear_cookies()
    sign_in("audrey")
    page.goto(live_server.url + "/mailboxes/readiness/#prerequisites")
    assert page.get_by_test_id("rd-prereq-check-form").count() == 0
    assert "Error: bind refused" in page.get_by_test_id("rd-prerequisites").inner_text()
    _both_widths(page, screenshot, "auditor")
