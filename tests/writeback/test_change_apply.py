"""Help-desk edits applied end to end: a private directory and Exchange Online emulator, the test database, Redis and a
real RQ worker (SimpleWorker, burst) running the apply job and then the writeback job it requests.

Cloud-managed mailboxes are written in Exchange Online (read back through the emulator's admin API) and then in AD
(read on a plain ldap3 connection of the test's own); AD-managed ones in AD only, until the emulator's Entra Connect
tick carries the edit to Exchange. Exchange's own refusal fails the request with its message and writes nothing to
AD; a job delivered twice applies once; the authority at apply time decides the route; one correlation id runs from
the request through Exchange to AD.
"""

import uuid

import django_rq
import ldap3
import pytest
from ldap3.utils.conv import escape_bytes
from rq import SimpleWorker

from portal.audit import verify_chain
from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs
from soa.choices import Authority, ChangeRoute, ChangeState
from soa.models import AcceptedDomain, ChangeRequest, Mailbox, MailboxAddress, RemovedAddress
from soa.services.changes import change_request_approve, change_request_create
from tests.exchange_fixtures import private_tenant
from writeback.inventory import inventory_run_request
from writeback.jobs import changes
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun, WritebackTask

pytestmark = pytest.mark.django_db(transaction=True)

USERS = 30
SEED = 43
_USED: set[str] = set()  # mailboxes an earlier test of the tenant edited (the tenant outlives each test's database)
_keys = iter(range(1, 1_000_000))


@pytest.fixture(scope="module")
def tenant():
    _USED.clear()  # a new tenant for each module that uses it: none of its mailboxes has been edited yet
    with private_tenant(users=USERS, seed=SEED) as (directory, exchange, _report):
        # More cloud-managed mailboxes than the seed's tenth, one for each test that needs its own.
        synced = sorted((m for m in exchange.mailboxes() if m.get("IsDirSynced")), key=lambda m: m["Alias"])
        for mailbox in synced[: USERS // 2]:
            exchange.update_mailbox(mailbox["ExternalDirectoryObjectId"], IsExchangeCloudManaged=True)
        yield directory, exchange


@pytest.fixture
def stack(tenant, settings):
    directory, exchange = tenant
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = False
    for name in (jobs.QUEUE, jobs.WRITEBACK_QUEUE):
        queue = django_rq.get_queue(name)
        queue.empty()
        for job_id in queue.scheduled_job_registry.get_job_ids():
            queue.scheduled_job_registry.remove(job_id, delete_job=True)
    exchange.clear_faults()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    return directory, exchange


@pytest.fixture
def people(make_user):
    return {"help": make_user("hugo", Role.HELPDESK), "approver": make_user("anna", Role.APPROVER)}


def unused(authority: str) -> Mailbox:
    mailbox = (
        Mailbox.objects.filter(authority=authority, in_exo=True, in_ad=True, has_drift=False)
        .exclude(ad_guid=None)
        .exclude(exo_object_id=None)
        .exclude(upn__in=_USED)
        .order_by("upn")
        .first()
    )
    assert mailbox is not None, "the tenant has run out of unused mailboxes"
    _USED.add(mailbox.upn)
    return mailbox


def ask(person, mailbox: Mailbox, *operations) -> ChangeRequest:
    return change_request_create(
        actor=person, mailbox_id=mailbox.pk, operations=list(operations), reason="ticket 4711",
        base_version=mailbox.version, idempotency_key=f"form-{next(_keys)}",
    )  # fmt: skip


def work() -> None:
    """The real worker on both queues until they are empty: the apply job, then the writeback job it queued."""
    queues = [django_rq.get_queue(jobs.QUEUE), django_rq.get_queue(jobs.WRITEBACK_QUEUE)]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True)
    for queue in queues:
        failed = queue.failed_job_registry
        assert failed.count == 0, [queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]


def read_ad(directory, mailbox: Mailbox, *attributes: str) -> dict[str, list[str]]:
    """The user's attributes as a separate ldap3 connection reads them."""
    server = ldap3.Server(directory.url, get_info=ldap3.NONE)
    with ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True) as conn:
        conn.search(directory.base_dn, f"(objectGUID={escape_bytes(mailbox.ad_guid.bytes_le)})", attributes=attributes)
        (entry,) = [item for item in conn.response if item["type"] == "searchResEntry"]
        return {name: [value.decode() for value in entry["raw_attributes"].get(name, [])] for name in attributes}


def in_exchange(exchange, mailbox: Mailbox) -> dict:
    return exchange.get_mailbox(str(mailbox.exo_object_id))


def set_mailbox_calls(exchange) -> int:
    return exchange.counters()["by_cmdlet"].get("Set-Mailbox", 0)


def domain(mailbox: Mailbox) -> str:
    return mailbox.primary_smtp.partition("@")[2]


def fresh(prefix: str, mailbox: Mailbox) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}@{domain(mailbox)}"


def test_an_inventory_import_reads_the_tenants_accepted_domains(stack):
    _, exchange = stack
    known = set(AcceptedDomain.objects.values_list("domain", flat=True))
    assert {exchange.mail_domain.lower(), f"{exchange.mail_domain.split('.')[0]}.onmicrosoft.com"} <= known


def test_an_alias_added_to_a_cloud_mailbox_is_in_exchange_then_in_ad_under_one_correlation_id(stack, people):
    directory, exchange = stack
    mailbox = unused(Authority.CLOUD)
    alias = fresh("help", mailbox)
    request = ask(people["help"], mailbox, {"op": "add_alias", "address": alias})
    assert request.route == ChangeRoute.EXO_THEN_AD
    work()

    request.refresh_from_db()
    assert request.state == ChangeState.APPLIED, request.error
    assert f"smtp:{alias}" in in_exchange(exchange, mailbox)["EmailAddresses"]
    assert f"smtp:{alias}" in read_ad(directory, mailbox, "proxyAddresses")["proxyAddresses"]
    results = request.results
    assert results["route"] == ChangeRoute.EXO_THEN_AD and results["exchange"]["written"] is True
    assert results["exchange"]["parameters"] == {"EmailAddresses": {"Add": [f"smtp:{alias}"]}}
    task = WritebackTask.objects.get(pk=results["directory"]["writeback_task"])
    assert task.state == WritebackTask.State.DONE and task.source == f"change_request:{request.pk}"
    updated = Mailbox.objects.get(pk=mailbox.pk)
    assert updated.version == mailbox.version + 1
    assert f"smtp:{alias}" in updated.exo_values["EmailAddresses"] and not updated.has_drift
    assert MailboxAddress.objects.filter(mailbox=mailbox, address=alias.lower()).exists()
    chain = [e.action for e in AuditEvent.objects.filter(correlation_id=request.correlation_id).order_by("id")]
    assert chain == ["soa.change.requested", "soa.change.applying", "writeback.task.requested", "soa.change.applied",
                     "writeback.task.started", "writeback.task.completed"]  # fmt: skip
    assert verify_chain()[1] is None


def test_an_alias_made_primary_after_approval_is_the_primary_in_exchange_and_in_ad(stack, people):
    directory, exchange = stack
    mailbox = unused(Authority.CLOUD)
    alias = fresh("primary", mailbox)
    added = ask(people["help"], mailbox, {"op": "add_alias", "address": alias})
    work()
    mailbox.refresh_from_db()
    assert ChangeRequest.objects.get(pk=added.pk).state == ChangeState.APPLIED
    request = ask(people["help"], mailbox, {"op": "make_primary", "address": alias})
    assert request.state == ChangeState.PENDING_APPROVAL
    work()
    assert in_exchange(exchange, mailbox)["WindowsEmailAddress"].lower() != alias.lower()  # nothing before approval
    change_request_approve(actor=people["approver"], request_id=request.pk)
    work()

    request.refresh_from_db()
    assert request.state == ChangeState.APPLIED, request.error
    cloud = in_exchange(exchange, mailbox)
    assert cloud["WindowsEmailAddress"].lower() == alias.lower() and f"SMTP:{alias}" in cloud["EmailAddresses"]
    ad = read_ad(directory, mailbox, "proxyAddresses", "mail")
    assert ad["mail"] == [alias] and f"SMTP:{alias}" in ad["proxyAddresses"]
    assert f"smtp:{mailbox.primary_smtp}" in [value.lower() for value in ad["proxyAddresses"]]  # kept, secondary
    assert Mailbox.objects.get(pk=mailbox.pk).primary_smtp == alias.lower()


def test_a_custom_attribute_and_hiding_from_address_lists_reach_exchange_then_ad(stack, people, settings):
    directory, exchange = stack
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = True  # the opt-in: Microsoft's writeback leaves it out
    mailbox = unused(Authority.CLOUD)
    request = ask(people["help"], mailbox, {"op": "set_custom_attribute", "attribute": "CustomAttribute7",
                                            "value": "CC-4711"}, {"op": "hide_from_address_lists"})  # fmt: skip
    work()

    request.refresh_from_db()
    assert request.state == ChangeState.APPLIED, request.error
    cloud = in_exchange(exchange, mailbox)
    assert cloud["CustomAttribute7"] == "CC-4711" and cloud["HiddenFromAddressListsEnabled"] is True
    ad = read_ad(directory, mailbox, "extensionAttribute7", "msExchHideFromAddressLists")
    assert ad == {"extensionAttribute7": ["CC-4711"], "msExchHideFromAddressLists": ["TRUE"]}


def test_without_the_opt_in_hiding_is_applied_in_exchange_and_the_results_say_it_is_not_written_back(stack, people):
    directory, exchange = stack
    mailbox = unused(Authority.CLOUD)
    request = ask(people["help"], mailbox, {"op": "hide_from_address_lists"})
    work()
    request.refresh_from_db()
    assert request.state == ChangeState.APPLIED, request.error
    assert in_exchange(exchange, mailbox)["HiddenFromAddressListsEnabled"] is True
    assert request.results["directory"]["not_written_back"] == ["HiddenFromAddressListsEnabled"]
    assert "writeback_task" not in request.results["directory"]
    assert read_ad(directory, mailbox, "msExchHideFromAddressLists")["msExchHideFromAddressLists"] == []


def test_an_ad_managed_mailbox_is_edited_in_ad_only_until_entra_connect_carries_it(stack, people):
    directory, exchange = stack
    mailbox = unused(Authority.ON_PREM)
    alias = fresh("onprem", mailbox)
    sets = set_mailbox_calls(exchange)
    added = ask(people["help"], mailbox, {"op": "add_alias", "address": alias},
                {"op": "set_custom_attribute", "attribute": "CustomAttribute3", "value": "on-prem"})  # fmt: skip
    assert added.route == ChangeRoute.AD_ONLY
    work()
    added.refresh_from_db()
    assert added.state == ChangeState.APPLIED, added.error
    assert added.results["exchange"] == {"written": False, "note": changes.ENTRA_CONNECT_NOTE}
    ad = read_ad(directory, mailbox, "proxyAddresses", "extensionAttribute3", "msExchPoliciesExcluded")
    assert f"smtp:{alias}" in ad["proxyAddresses"] and ad["extensionAttribute3"] == ["on-prem"]
    assert ad["msExchPoliciesExcluded"] == []  # no custom primary: the policy still applies
    assert f"smtp:{alias}" not in in_exchange(exchange, mailbox)["EmailAddresses"]  # until the next sync
    assert set_mailbox_calls(exchange) == sets and not WritebackTask.objects.exists()
    assert alias in Mailbox.objects.get(pk=mailbox.pk).ad_values["EmailAddresses"][-1]

    mailbox.refresh_from_db()
    primary = ask(people["help"], mailbox, {"op": "make_primary", "address": alias})
    change_request_approve(actor=people["approver"], request_id=primary.pk)
    work()
    primary.refresh_from_db()
    assert primary.state == ChangeState.APPLIED, primary.error
    ad = read_ad(directory, mailbox, "proxyAddresses", "mail", "msExchPoliciesExcluded")
    assert ad["mail"] == [alias] and f"SMTP:{alias}" in ad["proxyAddresses"]
    assert ad["msExchPoliciesExcluded"] == [changes.POLICY_EXCLUDED]
    assert in_exchange(exchange, mailbox)["WindowsEmailAddress"].lower() != alias.lower()

    exchange.sync()
    cloud = in_exchange(exchange, mailbox)
    assert cloud["WindowsEmailAddress"].lower() == alias.lower() and cloud["CustomAttribute3"] == "on-prem"
    assert set_mailbox_calls(exchange) == sets


def test_exchange_refusing_an_address_used_elsewhere_fails_the_request_and_writes_nothing_to_ad(stack, people):
    directory, exchange = stack
    mailbox, other = unused(Authority.CLOUD), unused(Authority.CLOUD)
    taken = fresh("taken", mailbox)
    # Someone gave the address to another mailbox in Exchange; the portal has not imported that yet.
    held = in_exchange(exchange, other)["EmailAddresses"]
    exchange.update_mailbox(str(other.exo_object_id), EmailAddresses=[*held, f"smtp:{taken}"])
    before = read_ad(directory, mailbox, "proxyAddresses")
    request = ask(people["help"], mailbox, {"op": "add_alias", "address": taken})
    work()

    request.refresh_from_db()
    assert request.state == ChangeState.FAILED
    assert "is already being used" in request.error and taken in request.error
    assert read_ad(directory, mailbox, "proxyAddresses") == before
    assert not WritebackTask.objects.filter(mailbox=mailbox).exists()
    assert Mailbox.objects.get(pk=mailbox.pk).version == mailbox.version
    assert AuditEvent.objects.get(action="soa.change.failed", object_id=str(request.pk)).reason == request.error
    assert not RemovedAddress.objects.exists()


def test_a_job_delivered_twice_applies_the_request_once(stack, people):
    directory, exchange = stack
    mailbox = unused(Authority.CLOUD)
    alias = fresh("twice", mailbox)
    sets = set_mailbox_calls(exchange)
    request = ask(people["help"], mailbox, {"op": "add_alias", "address": alias})
    jobs.enqueue(jobs.CHANGE_APPLY_JOB, request.pk)  # the same job again, as a redelivery would
    work()

    request.refresh_from_db()
    assert request.state == ChangeState.APPLIED and request.attempts == 1
    assert set_mailbox_calls(exchange) == sets + 1
    assert AuditEvent.objects.filter(action="soa.change.applied", object_id=str(request.pk)).count() == 1
    assert WritebackTask.objects.filter(mailbox=mailbox).count() == 1
    assert changes.change_request_apply_job(request.pk) is None  # and once more, by hand: nothing to claim


def test_a_retried_attempt_reads_exchange_first_and_sends_nothing_already_there(stack, people):
    directory, exchange = stack
    mailbox = unused(Authority.CLOUD)
    alias = fresh("retried", mailbox)
    request = ask(people["help"], mailbox, {"op": "add_alias", "address": alias})
    django_rq.get_queue(jobs.QUEUE).empty()
    # The first attempt's Set-Mailbox landed, then its worker died before recording it: Exchange holds the alias.
    held = in_exchange(exchange, mailbox)["EmailAddresses"]
    exchange.update_mailbox(str(mailbox.exo_object_id), EmailAddresses=[*held, f"smtp:{alias}"])
    sets = set_mailbox_calls(exchange)
    assert changes.change_request_apply_job(request.pk) == ChangeState.APPLIED
    work()

    request.refresh_from_db()
    assert set_mailbox_calls(exchange) == sets and request.results["exchange"]["written"] is False
    assert f"smtp:{alias}" in read_ad(directory, mailbox, "proxyAddresses")["proxyAddresses"]


def test_a_transient_exchange_failure_releases_the_request_for_a_scheduled_retry(stack, people, settings):
    _, exchange = stack
    settings.EXO_MAX_ATTEMPTS = 1  # the client's own retries are its tests' business; here the job's are
    mailbox = unused(Authority.CLOUD)
    alias = fresh("transient", mailbox)
    request = ask(people["help"], mailbox, {"op": "add_alias", "address": alias})
    django_rq.get_queue(jobs.QUEUE).empty()
    exchange.set_faults(error_rate=1.0, error_status=503)
    assert changes.change_request_apply_job(request.pk) == ChangeState.APPLYING
    request.refresh_from_db()
    assert request.heartbeat_at is None and "Trying again at" in request.error and request.attempts == 1
    scheduled = django_rq.get_queue(jobs.QUEUE).scheduled_job_registry.get_job_ids()
    assert [django_rq.get_queue(jobs.QUEUE).fetch_job(job_id).args for job_id in scheduled] == [(request.pk,)]
    assert AuditEvent.objects.filter(action="soa.change.released", object_id=str(request.pk)).count() == 1

    exchange.clear_faults()
    assert changes.change_request_apply_job(request.pk) == ChangeState.APPLIED
    request.refresh_from_db()
    assert request.attempts == 2 and request.error == ""


def test_the_route_follows_the_authority_at_apply_time(stack, people):
    directory, exchange = stack
    mailbox = unused(Authority.CLOUD)
    alias = fresh("flipped", mailbox)
    request = ask(people["help"], mailbox, {"op": "add_alias", "address": alias})
    assert request.route == ChangeRoute.EXO_THEN_AD
    django_rq.get_queue(jobs.QUEUE).empty()
    # A rollback wave gave AD the authority back before the request was applied.
    exchange.update_mailbox(str(mailbox.exo_object_id), IsExchangeCloudManaged=False)
    sets = set_mailbox_calls(exchange)
    assert changes.change_request_apply_job(request.pk) == ChangeState.APPLIED

    request.refresh_from_db()
    assert request.route == ChangeRoute.AD_ONLY and request.results["requested_route"] == ChangeRoute.EXO_THEN_AD
    assert "authority changed" in request.results["note"] and request.results["authority"] == Authority.ON_PREM
    assert f"smtp:{alias}" in read_ad(directory, mailbox, "proxyAddresses")["proxyAddresses"]
    assert set_mailbox_calls(exchange) == sets and not WritebackTask.objects.filter(mailbox=mailbox).exists()
    exchange.update_mailbox(str(mailbox.exo_object_id), IsExchangeCloudManaged=True)  # as the module found it
