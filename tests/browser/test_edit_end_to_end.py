"""Browser journeys of help-desk edits end to end: Chromium drives the mailbox page against a private directory
(slapd) and HTTPS Exchange Online emulator of this module's own, and the real RQ worker applies what was asked.

Each journey clicks through the edit (editor, preview, reason, confirmation), then runs the worker (rq's SimpleWorker
in the test's own thread, as tests/browser/test_wave_run.py does: the worker then shares the test database on SQLite
too) while the page keeps polling on its own, and waits for the request to show "Applied" without a reload. What
was written is read outside the portal: Exchange through the emulator's admin API, AD on a plain ldap3 connection of
the test's own. One tenant serves the whole module; every journey takes mailboxes no other journey has touched, so
nothing needs undoing between them.
"""

import re
import uuid

import django_rq
import ldap3
import pytest
from django.conf import settings as django_settings
from ldap3.utils.conv import escape_bytes
from playwright.sync_api import expect
from rq import SimpleWorker

from portal.dn import normalize_dn
from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs
from soa.choices import Authority, ChangeRoute, ChangeState
from soa.models import ChangeRequest, Mailbox
from soa.services.changes import change_request_create
from tests.browser.conftest import ARTIFACTS
from tests.conftest import PASSWORD
from tests.exchange_fixtures import private_tenant
from tests.soa.test_wave_support import FINANCE, SALES
from writeback.inventory import inventory_run_request
from writeback.jobs.changes import ENTRA_CONNECT_NOTE
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun, WritebackTask

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

USERS = 60  # about 18 in Sales: one unused mailbox for each journey, with room to spare
SEED = 13
POLL_WAIT = 15_000  # ms: the Changes card polls every 2 s; generous for a slow CI machine
_USED: set[str] = set()  # mailboxes an earlier journey edited (the tenant outlives each test's database)


@pytest.fixture(scope="module")
def tenant():
    """A directory and an emulator of this module's own; the portal's settings point at them meanwhile."""
    with private_tenant(users=USERS, seed=SEED) as (directory, exchange, _report):
        yield directory, exchange


def _empty_queues() -> None:
    for name in (jobs.QUEUE, jobs.WRITEBACK_QUEUE):
        queue = django_rq.get_queue(name)
        queue.empty()
        for registry in (queue.scheduled_job_registry, queue.failed_job_registry):
            for job_id in registry.get_job_ids():
                registry.remove(job_id, delete_job=True)


def _import_inventory() -> None:
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE


@pytest.fixture
def stack(tenant, settings):
    """The module's tenant imported into this test's database, the queues empty, hiding not written back."""
    directory, exchange = tenant
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = False
    exchange.clear_faults()
    _empty_queues()
    _import_inventory()
    yield directory, exchange
    _empty_queues()


@pytest.fixture
def helen(make_user):
    """Help desk, limited to the Sales OU."""
    return make_user("helen", Role.HELPDESK, scopes=(SALES,))


def work() -> None:
    """The real worker on both queues until they are empty: the apply job, then the writeback job it queued."""
    queues = [django_rq.get_queue(jobs.QUEUE), django_rq.get_queue(jobs.WRITEBACK_QUEUE)]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True)
    for queue in queues:
        failed = queue.failed_job_registry
        assert failed.count == 0, [queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]


def unused(authority: str, ou: str = SALES) -> Mailbox:
    """A mailbox of ``ou`` with both sides present and equal, which no earlier journey edited."""
    mailbox = (
        Mailbox.objects.filter(authority=authority, ou_norm=normalize_dn(ou), in_exo=True, in_ad=True, has_drift=False)
        .exclude(ad_guid=None)
        .exclude(exo_object_id=None)
        .exclude(upn__in=_USED)
        .order_by("upn")
        .first()
    )
    assert mailbox is not None, f"the tenant has run out of unused {authority} mailboxes in {ou}"
    _USED.add(mailbox.upn)
    return mailbox


def cloud_managed(exchange) -> Mailbox:
    """An AD-managed Sales mailbox made cloud-managed the way a wave does it (the flag in Exchange Online), then
    imported again so the portal knows Exchange holds its authority."""
    mailbox = unused(Authority.ON_PREM)
    exchange.update_mailbox(str(mailbox.exo_object_id), IsExchangeCloudManaged=True)
    _import_inventory()
    mailbox.refresh_from_db()
    assert mailbox.authority == Authority.CLOUD
    return mailbox


def read_ad(directory, mailbox: Mailbox, *attributes: str) -> dict[str, list[str]]:
    """The user's attributes as a separate ldap3 connection reads them."""
    server = ldap3.Server(directory.url, get_info=ldap3.NONE)
    with ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True) as conn:
        conn.search(directory.base_dn, f"(objectGUID={escape_bytes(mailbox.ad_guid.bytes_le)})", attributes=attributes)
        (entry,) = [item for item in conn.response if item["type"] == "searchResEntry"]
        return {name: [value.decode() for value in entry["raw_attributes"].get(name, [])] for name in attributes}


def in_exchange(exchange, mailbox: Mailbox) -> dict:
    """The mailbox as the emulator stores it (its admin API: no faults, no lag)."""
    return exchange.get_mailbox(str(mailbox.exo_object_id))


def set_mailbox_calls(exchange) -> int:
    return exchange.counters()["by_cmdlet"].get("Set-Mailbox", 0)


def fresh(prefix: str, mailbox: Mailbox) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}@{mailbox.primary_smtp.partition('@')[2]}"


def sign_in_as(page, live_server, username: str) -> None:
    page.goto(live_server.url + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")


def open_mailbox(page, live_server, mailbox: Mailbox) -> None:
    """The mailbox page, marked so that a reload (which would drop the mark) shows in the assertions."""
    page.goto(f"{live_server.url}/mailboxes/{mailbox.pk}/")
    page.evaluate("window.__noReload = true")


def not_reloaded(page) -> bool:
    return page.evaluate("window.__noReload === true")


def confirm(page, reason: str, *, route: str, approval: bool = False) -> ChangeRequest:
    """From an open editor: preview, check the route and the approval line, give the reason, confirm."""
    page.get_by_test_id("preview-change").click()
    page.get_by_test_id("change-preview").wait_for()
    expect(page.get_by_test_id("change-route")).to_contain_text(route)
    expect(page.get_by_test_id("change-approval")).to_contain_text("Needs approval" if approval else "No approval")
    page.get_by_label("Reason (required)").fill(reason)
    page.get_by_test_id("confirm-change").click()
    page.get_by_test_id("change-created").wait_for()
    return ChangeRequest.objects.filter(reason=reason).get()


def applied_on_page(page, change: ChangeRequest) -> None:
    """The Changes card shows the request applied on one of its polls, without a reload of the page."""
    listed = page.get_by_test_id(f"change-{change.pk}")
    expect(listed.get_by_test_id("change-state")).to_have_text("Applied", timeout=POLL_WAIT)
    expect(page.get_by_test_id("changes-live")).to_have_count(0, timeout=POLL_WAIT)  # polling stopped
    assert not_reloaded(page)
    change.refresh_from_db()
    assert change.state == ChangeState.APPLIED, change.error


def written_back_attributes_shown(page) -> None:
    """After the request finished, the attributes card refreshed itself and offers edits again."""
    expect(page.get_by_test_id("add-alias")).to_be_visible(timeout=POLL_WAIT)


@pytest.fixture
def shoot(request):
    """Screenshots of any page (the approver's too) under test-results/<test name>/NN-<label>.png."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)  # as tests/browser/conftest.py names them
    folder.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 1000))

    def take(page, label: str) -> None:
        page.screenshot(path=str(folder / f"{next(counter):02d}-{label}.png"), full_page=True)

    return take


def test_an_alias_added_in_the_browser_reaches_exchange_then_ad_under_one_correlation_id(
    live_server, page, shoot, helen, stack
):
    directory, exchange = stack
    mailbox = cloud_managed(exchange)
    alias = fresh("e2e-alias", mailbox)
    sign_in_as(page, live_server, "helen")
    open_mailbox(page, live_server, mailbox)
    expect(page.get_by_test_id("authority")).to_have_text("Exchange Online is authority")
    shoot(page, "cloud-mailbox")

    page.get_by_test_id("add-alias").click()
    page.get_by_label("New address").fill(alias)
    page.get_by_test_id("preview-change").click()
    page.get_by_test_id("change-preview").wait_for()
    assert f"smtp:{alias}" in page.get_by_test_id("change-preview").inner_text()
    shoot(page, "preview")
    page.get_by_test_id("confirm-change").click()  # no reason yet: refused on the reason, nothing asked
    expect(page.get_by_label("Reason (required)")).to_have_attribute("aria-invalid", "true")
    assert not ChangeRequest.objects.exists()
    shoot(page, "reason-missing")
    expect(page.get_by_test_id("change-route")).to_have_text("Written to: Exchange Online, then Active Directory.")
    page.get_by_label("Reason (required)").fill("ticket 5001: team address")
    page.get_by_test_id("confirm-change").click()
    page.get_by_test_id("change-created").wait_for()
    change = ChangeRequest.objects.get()
    assert change.route == ChangeRoute.EXO_THEN_AD and change.state == ChangeState.VALIDATED
    expect(page.get_by_test_id(f"change-{change.pk}").get_by_test_id("change-state")).to_have_text("Ready to apply")
    shoot(page, "requested")

    work()
    applied_on_page(page, change)
    results = page.get_by_test_id(f"change-{change.pk}").get_by_test_id("change-results").inner_text()
    assert "Exchange Online: written" in results
    written_back_attributes_shown(page)
    assert alias in page.locator("#row-EmailAddresses").inner_text()
    shoot(page, "applied")

    assert f"smtp:{alias}" in in_exchange(exchange, mailbox)["EmailAddresses"]
    assert f"smtp:{alias}" in read_ad(directory, mailbox, "proxyAddresses")["proxyAddresses"]
    task = WritebackTask.objects.get(pk=change.results["directory"]["writeback_task"])
    assert task.state == WritebackTask.State.DONE
    # The page's request id runs through the request, the Exchange write and the AD writeback.
    chain = list(AuditEvent.objects.filter(correlation_id=change.correlation_id).order_by("id"))
    assert [event.action for event in chain] == [
        "soa.change.requested", "soa.change.applying", "writeback.task.requested", "soa.change.applied",
        "writeback.task.started", "writeback.task.completed",
    ]  # fmt: skip
    assert chain[0].actor_id == helen.pk
    applied = next(event for event in chain if event.action == "soa.change.applied")
    assert applied.after["results"]["exchange"]["parameters"] == {"EmailAddresses": {"Add": [f"smtp:{alias}"]}}


def test_a_primary_change_waits_for_an_approver_then_lands_in_exchange_then_ad(
    live_server, chromium, page, shoot, helen, make_user, stack
):
    directory, exchange = stack
    make_user("anna", Role.APPROVER, scopes=(SALES,))
    mailbox = cloud_managed(exchange)
    alias = fresh("e2e-primary", mailbox)
    change_request_create(
        actor=helen, mailbox_id=mailbox.pk, operations=[{"op": "add_alias", "address": alias}],
        reason="the address to make primary", base_version=mailbox.version, idempotency_key=f"setup-{alias}",
    )  # fmt: skip
    work()
    mailbox.refresh_from_db()
    old_primary = mailbox.primary_smtp

    sign_in_as(page, live_server, "helen")
    open_mailbox(page, live_server, mailbox)
    page.get_by_role("link", name=f"Make {alias} primary").click()
    expect(page.get_by_label("Address to make primary")).to_have_value(alias)
    change = confirm(page, "ticket 5002: new surname", route="Exchange Online, then Active Directory.", approval=True)
    assert change.state == ChangeState.PENDING_APPROVAL
    listed = page.get_by_test_id(f"change-{change.pk}")
    expect(listed.get_by_test_id("change-state")).to_have_text("Awaiting approval")
    assert page.get_by_test_id("changes-live").is_visible()
    shoot(page, "helpdesk-asked")
    work()  # nothing is queued before the approval
    assert in_exchange(exchange, mailbox)["WindowsEmailAddress"].lower() == old_primary

    approver = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        other = approver.new_page()
        sign_in_as(other, live_server, "anna")
        open_mailbox(other, live_server, mailbox)
        theirs = other.get_by_test_id(f"change-{change.pk}")
        assert f"+ SMTP:{alias}" in theirs.get_by_test_id("change-diff").inner_text()
        shoot(other, "approver-sees")
        theirs.get_by_role("link", name="Approve…").click()
        other.get_by_test_id("decision-form").get_by_role("button", name="Approve").click()
        other.get_by_test_id("change-decided").wait_for()
        shoot(other, "approver-approved")
    finally:
        approver.close()
    change.refresh_from_db()
    assert change.state == ChangeState.APPROVED and change.decided_by.username == "anna"

    work()
    applied_on_page(page, change)  # the help desk's page, which kept polling meanwhile
    written_back_attributes_shown(page)
    shoot(page, "helpdesk-applied")
    cloud = in_exchange(exchange, mailbox)
    assert cloud["WindowsEmailAddress"].lower() == alias.lower() and f"SMTP:{alias}" in cloud["EmailAddresses"]
    ad = read_ad(directory, mailbox, "mail", "proxyAddresses")
    assert ad["mail"] == [alias] and f"SMTP:{alias}" in ad["proxyAddresses"]
    assert f"smtp:{old_primary}" in [value.lower() for value in ad["proxyAddresses"]]  # kept as a secondary
    assert AuditEvent.objects.filter(action="soa.change.approved", object_id=str(change.pk)).count() == 1


def test_a_custom_attribute_set_then_cleared_in_the_browser_is_set_then_cleared_in_exchange_and_ad(
    live_server, page, shoot, helen, stack
):
    directory, exchange = stack
    mailbox = cloud_managed(exchange)
    sign_in_as(page, live_server, "helen")
    open_mailbox(page, live_server, mailbox)

    page.get_by_role("link", name="Set Custom attribute 7").click()
    page.get_by_label("New value").fill("CC-5003")
    change = confirm(page, "ticket 5003: cost centre", route="Exchange Online, then Active Directory.")
    shoot(page, "set-requested")
    work()
    applied_on_page(page, change)
    assert in_exchange(exchange, mailbox)["CustomAttribute7"] == "CC-5003"
    assert read_ad(directory, mailbox, "extensionAttribute7") == {"extensionAttribute7": ["CC-5003"]}
    shoot(page, "set-applied")

    # The attributes card refreshed itself with the new value and its version: the Clear link is there now.
    page.get_by_role("link", name="Clear Custom attribute 7").click()
    cleared = confirm(page, "ticket 5004: cost centre withdrawn", route="Exchange Online, then Active Directory.")
    work()
    applied_on_page(page, cleared)
    expect(page.get_by_role("link", name="Clear Custom attribute 7")).to_have_count(0, timeout=POLL_WAIT)
    shoot(page, "cleared")
    assert not in_exchange(exchange, mailbox)["CustomAttribute7"]
    assert read_ad(directory, mailbox, "extensionAttribute7") == {"extensionAttribute7": []}


@pytest.mark.parametrize("written_back", [True, False], ids=["writeback-on", "writeback-off"])
def test_hiding_from_address_lists_reaches_ad_only_with_its_opt_in(
    live_server, page, shoot, helen, stack, settings, written_back
):
    directory, exchange = stack
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = written_back  # the worker runs in this process and reads it
    mailbox = cloud_managed(exchange)
    sign_in_as(page, live_server, "helen")
    open_mailbox(page, live_server, mailbox)

    page.get_by_role("link", name="Hide from address lists").click()
    page.get_by_text("The mailbox will no longer appear in the address book (GAL).").wait_for()
    change = confirm(page, "ticket 5005: leaver", route="Exchange Online, then Active Directory.")
    work()
    applied_on_page(page, change)
    expect(page.get_by_role("link", name="Show in address lists")).to_be_visible(timeout=POLL_WAIT)
    shoot(page, "applied")

    assert in_exchange(exchange, mailbox)["HiddenFromAddressListsEnabled"] is True
    ad = read_ad(directory, mailbox, "msExchHideFromAddressLists")["msExchHideFromAddressLists"]
    if written_back:
        assert ad == ["TRUE"]
        assert WritebackTask.objects.get(mailbox=mailbox).state == WritebackTask.State.DONE
    else:
        assert ad == []
        assert change.results["directory"]["not_written_back"] == ["HiddenFromAddressListsEnabled"]
        assert not WritebackTask.objects.filter(mailbox=mailbox).exists()


def test_an_ad_managed_mailbox_edited_in_the_browser_changes_ad_only_until_entra_connect_syncs(
    live_server, page, shoot, helen, stack
):
    directory, exchange = stack
    mailbox = unused(Authority.ON_PREM)
    alias = fresh("e2e-onprem", mailbox)
    sets = set_mailbox_calls(exchange)
    sign_in_as(page, live_server, "helen")
    open_mailbox(page, live_server, mailbox)
    expect(page.get_by_test_id("authority")).to_have_text("Active Directory is authority")

    page.get_by_test_id("add-alias").click()
    page.get_by_label("New address").fill(alias)
    change = confirm(page, "ticket 5006: on-prem alias", route="Active Directory only; Entra Connect carries it")
    assert change.route == ChangeRoute.AD_ONLY
    work()
    applied_on_page(page, change)
    results = page.get_by_test_id(f"change-{change.pk}").get_by_test_id("change-results").inner_text()
    assert "Active Directory: written" in results and ENTRA_CONNECT_NOTE in results
    shoot(page, "applied")

    assert f"smtp:{alias}" in read_ad(directory, mailbox, "proxyAddresses")["proxyAddresses"]
    assert f"smtp:{alias}" not in in_exchange(exchange, mailbox)["EmailAddresses"]
    assert set_mailbox_calls(exchange) == sets and not WritebackTask.objects.exists()

    exchange.sync()  # Entra Connect's next cycle carries AD's value to the cloud; the portal sent nothing
    assert f"smtp:{alias}" in in_exchange(exchange, mailbox)["EmailAddresses"]
    assert set_mailbox_calls(exchange) == sets


def test_a_crafted_post_for_a_mailbox_outside_the_help_desks_ou_is_refused_and_audited(
    live_server, page, shoot, helen, stack
):
    directory, _ = stack
    mine, theirs = unused(Authority.ON_PREM), unused(Authority.ON_PREM, ou=FINANCE)
    alias = fresh("e2e-crafted", theirs)
    before = read_ad(directory, theirs, "proxyAddresses")
    sign_in_as(page, live_server, "helen")
    open_mailbox(page, live_server, mine)  # a page of her own, for a CSRF token the site gave her
    token = page.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")

    response = page.request.post(
        f"{live_server.url}/mailboxes/{theirs.pk}/edit/add_alias/confirm/",
        form={"csrfmiddlewaretoken": token, "address": alias, "base_version": str(theirs.version),
              "idempotency_key": "crafted-1", "reason": "none of my business"},
        headers={"Referer": f"{live_server.url}/mailboxes/{mine.pk}/", "HX-Request": "true"},
    )  # fmt: skip
    assert response.status == 404
    assert page.goto(f"{live_server.url}/mailboxes/{theirs.pk}/").status == 404  # the page, too, is not hers
    shoot(page, "outside-scope")

    denied = AuditEvent.objects.get(action="soa.change.denied")
    assert denied.actor_id == helen.pk and denied.after["mailbox"] == theirs.pk
    assert denied.after["detail"] == [{"op": "add_alias", "address": alias}]
    assert not ChangeRequest.objects.exists()
    assert read_ad(directory, theirs, "proxyAddresses") == before
    assert not django_rq.get_queue(jobs.QUEUE).count
    assert django_settings.CHANGE_APPLY_ENABLED  # refused by scope, not because applying was switched off
