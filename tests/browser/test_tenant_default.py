"""Browser journey: an administrator asks for the tenant default (exchange-facts §1.9) to be switched on, and two
approvers confirm it by typing the tenant's name, one at a desktop's width, one at a phone's; a wrong name is refused
and changes nothing. The portal reads the tenant's name and default from the HTTPS emulator."""

import django_rq
import pytest
from rq import SimpleWorker

from portal.roles import Role
from soa.choices import TenantDefaultState
from soa.models import TenantDefaultApproval, TenantDefaultRequest
from tests.exchange_fixtures import portal_points_at

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGE = "/mailboxes/readiness/tenant-default/"


@pytest.fixture
def tenant(directory, exo_clean):
    from django.core.cache import cache

    cache.clear()
    with portal_points_at(directory, exo_clean):
        yield exo_clean
    cache.clear()


def confirm(page, typed: str) -> None:
    page.fill("#id_typed_name", typed)
    page.get_by_role("button", name="Approve switching it on").click()


def test_two_approvers_confirm_the_switch_by_typing_the_tenant_name(
    live_server, page, screenshot, make_user, sign_in, tenant
):
    make_user("root", Role.ADMIN)
    make_user("anna", Role.APPROVER)
    make_user("abel", Role.APPROVER)
    name = tenant.tenant_domain

    sign_in("root")
    page.goto(live_server.url + "/mailboxes/readiness/")
    page.get_by_test_id("td-state").wait_for()  # the readiness page loads the value as a card
    assert page.get_by_test_id("td-value").get_attribute("data-enabled") == "no"
    page.goto(live_server.url + PAGE)
    assert "only Microsoft Support" in page.get_by_test_id("td-revert-note").inner_text()
    screenshot("admin-before-request")
    page.fill("#id_reason", "Every mailbox is cloud-managed; no recipient is created on-premises any more.")
    page.get_by_role("button", name="Ask for approval").click()
    page.get_by_text("is waiting for 2 approvers").wait_for()
    assert page.get_by_test_id("td-current").get_attribute("data-state") == TenantDefaultState.PENDING
    assert page.get_by_test_id("td-approve-form").count() == 0  # the requester cannot approve

    for user, width in (("anna", 1280), ("abel", 390)):
        page.context.clear_cookies()
        page.set_viewport_size({"width": width, "height": 900})
        sign_in(user)
        page.goto(live_server.url + PAGE)
        assert page.get_by_test_id("td-tenant-name").inner_text() == name
        confirm(page, "contoso.onmicrosoft.com")
        page.get_by_text("does not match the tenant's name").wait_for()
        assert not TenantDefaultApproval.objects.filter(approver__username=user).exists()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        screenshot(f"{user}-wrong-name-{width}")
        confirm(page, name)
        page.locator("ul.messages").wait_for()
        screenshot(f"{user}-approved-{width}")

    request = TenantDefaultRequest.objects.get()
    assert request.state == TenantDefaultState.QUEUED
    assert sorted(request.approvals.values_list("approver__username", flat=True)) == ["abel", "anna"]
    assert "the switch is queued" in page.locator("ul.messages").inner_text()

    queue = django_rq.get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)  # the job calls the emulator
    page.goto(live_server.url + PAGE)
    assert page.get_by_test_id("td-value").get_attribute("data-enabled") == "yes"
    assert page.get_by_test_id("td-history").locator("tbody tr").first.inner_text().count("Done") == 1
    screenshot("after-the-job-390")
