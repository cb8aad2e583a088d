"""Browser journeys: help desk repairs a drift finding on the drift page, and retries a failed writeback from the
mailbox page; each page kept at 1,280 and 390 px."""

import uuid

import pytest
from django.utils import timezone

from portal.dn import normalize_dn
from portal.roles import Role
from soa.choices import Authority
from soa.models import Mailbox
from writeback.models import DriftFinding, DriftScan, WritebackTask

pytestmark = pytest.mark.browser
SALES = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"


def _mailbox(name: str, alias: str) -> Mailbox:
    dn = f"CN={name},{SALES}"
    return Mailbox.objects.create(
        dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(SALES), upn=f"{alias}@corp.example.com",
        display_name=name, search_name=name.lower(), primary_smtp=f"{alias}@corp.example.com", in_ad=True,
        in_exo=True, authority=Authority.CLOUD, ad_guid=uuid.uuid4(), exo_object_id=uuid.uuid4(),
        exo_values={"CustomAttribute1": "Cloud value", "EmailAddresses": [f"SMTP:{alias}@corp.example.com"]},
        ad_values={"CustomAttribute1": "AD value"},
    )  # fmt: skip


def _no_horizontal_scroll(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_helpdesk_repairs_a_drift_finding(live_server, page, screenshot, make_user, sign_in):
    DriftScan.objects.create(mode=DriftScan.Mode.FULL, state=DriftScan.State.DONE, finished_at=timezone.now(),
                             compared=2, found=2)  # fmt: skip
    ann = _mailbox("Ann Archer", "ann.archer")
    DriftFinding.objects.create(
        mailbox=ann, attribute="CustomAttribute1", ad_value="AD value", cloud_value="Cloud value"
    )
    DriftFinding.objects.create(
        mailbox=ann, attribute="EmailAddresses", cloud_value=["SMTP:ann.archer@corp.example.com",
        "smtp:a.very.long.alias.for.the.sales.team.of.the.northern.region@corp.example.com"],
        ad_value=["SMTP:ann.archer@corp.example.com"],
    )  # fmt: skip
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    sign_in("helen")
    page.get_by_role("link", name="Drift", exact=True).click()
    page.wait_for_url(live_server.url + "/drift/")
    assert page.get_by_test_id("drift-count").inner_text().startswith("2 open findings")
    screenshot("drift-1280")
    _no_horizontal_scroll(page)
    page.set_viewport_size({"width": 390, "height": 800})
    screenshot("drift-390")
    _no_horizontal_scroll(page)
    page.set_viewport_size({"width": 1280, "height": 800})

    finding = DriftFinding.objects.get(attribute="CustomAttribute1")
    page.get_by_test_id(f"repair-{finding.pk}").click()
    page.get_by_test_id("drift-notice").wait_for()
    assert "Repair queued" in page.get_by_test_id("drift-notice").inner_text()
    assert page.get_by_test_id(f"finding-{finding.pk}").get_by_test_id("repair-queued").is_visible()
    screenshot("drift-repair-queued")

    page.get_by_test_id("drift-bulk-repair").click()
    assert "Repair 1 finding?" in page.locator("h1").inner_text()
    screenshot("drift-bulk-confirm")


def test_helpdesk_retries_a_failed_writeback_from_the_mailbox_page(live_server, page, screenshot, make_user, sign_in):
    ann = _mailbox("Ann Archer", "ann.archer")
    WritebackTask.objects.create(
        mailbox=ann, desired={"CustomAttribute1": "Cloud value"}, source="change_request:12",
        state=WritebackTask.State.FAILED, attempts=8, finished_at=timezone.now(),
        error="Gave up after 8 attempts. The directory is unreachable at ldaps://dc01.corp.example.com:636 "
        "(socket connection error while opening: [Errno 111] Connection refused).",
    )  # fmt: skip
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    sign_in("helen")
    page.goto(f"{live_server.url}/mailboxes/{ann.pk}/")
    card = page.get_by_test_id("mailbox-writeback")
    assert "Failed" in card.get_by_test_id("writeback-state").inner_text()
    screenshot("mailbox-writeback-failed-1280")
    _no_horizontal_scroll(page)
    page.set_viewport_size({"width": 390, "height": 800})
    screenshot("mailbox-writeback-failed-390")
    _no_horizontal_scroll(page)
    page.set_viewport_size({"width": 1280, "height": 800})

    card.get_by_test_id("writeback-retry").click()
    page.get_by_test_id("writeback-retry-form").wait_for()
    screenshot("mailbox-writeback-confirm")
    page.get_by_test_id("writeback-retry-confirm").click()
    page.get_by_test_id("writeback-retried").wait_for()
    assert WritebackTask.objects.get().state in (WritebackTask.State.QUEUED, WritebackTask.State.RUNNING,
                                                  WritebackTask.State.FAILED)  # fmt: skip
    screenshot("mailbox-writeback-retried")
