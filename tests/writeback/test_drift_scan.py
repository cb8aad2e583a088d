"""The drift scan and its repair, against a private directory and Exchange Online emulator, the test database and
Redis: a direct AD edit on a cloud-managed mailbox becomes one finding (not two on the next scan), an incremental scan
reads only what changed, a repair (one or in bulk) writes the cloud's value into AD (read back on a plain ldap3
connection) and resolves the finding, and help desk cannot repair outside its OUs (refused and audited).
"""

import django_rq
import ldap3
import pytest
from ldap3.utils.conv import escape_bytes
from rq import SimpleWorker

from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs
from soa.choices import Authority
from soa.models import Mailbox
from tests.exchange_fixtures import private_tenant
from writeback.drift import (
    DriftError,
    drift_finding_list,
    drift_finding_repair,
    drift_findings_repair,
    drift_scan_request,
)
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient
from writeback.inventory import inventory_run_request
from writeback.jobs import drift
from writeback.jobs.inventory import claim, execute
from writeback.models import DriftFinding, DriftScan, InventoryRun, WritebackTask

pytestmark = pytest.mark.django_db(transaction=True)

USERS = 30
SEED = 47


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=USERS, seed=SEED) as (directory, exchange, _report):
        synced = sorted((m for m in exchange.mailboxes() if m.get("IsDirSynced")), key=lambda m: m["Alias"])
        for mailbox in synced[: USERS // 2]:
            exchange.update_mailbox(mailbox["ExternalDirectoryObjectId"], IsExchangeCloudManaged=True)
        yield directory, exchange


@pytest.fixture
def stack(tenant, settings):
    directory, exchange = tenant
    settings.DRIFT_AUTO_REPAIR = False
    for name in (jobs.QUEUE, jobs.WRITEBACK_QUEUE):
        queue = django_rq.get_queue(name)
        queue.empty()
        for job_id in queue.scheduled_job_registry.get_job_ids():
            queue.scheduled_job_registry.remove(job_id, delete_job=True)
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    return directory, exchange


def ldap_connection(directory):
    server = ldap3.Server(directory.url, get_info=ldap3.NONE)
    return ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True)


def edit_ad(directory, mailbox: Mailbox, attribute: str, value: str) -> None:
    """Someone editing the user directly in AD."""
    with ldap_connection(directory) as conn:
        conn.search(directory.base_dn, f"(objectGUID={escape_bytes(mailbox.ad_guid.bytes_le)})", attributes=["1.1"])
        assert conn.modify(conn.response[0]["dn"], {attribute: [(ldap3.MODIFY_REPLACE, [value])]}), conn.result


def read_ad(directory, mailbox: Mailbox, attribute: str) -> list[str]:
    with ldap_connection(directory) as conn:
        conn.search(directory.base_dn, f"(objectGUID={escape_bytes(mailbox.ad_guid.bytes_le)})", attributes=[attribute])
        (entry,) = [item for item in conn.response if item["type"] == "searchResEntry"]
        return [value.decode() for value in entry["raw_attributes"].get(attribute, [])]


def scan(mode: str | None = None) -> DriftScan:
    row = drift_scan_request(actor=None, mode=mode, enqueue_job=False)
    assert drift.drift_scan_job(row.pk) == DriftScan.State.DONE, DriftScan.objects.get(pk=row.pk).error
    return DriftScan.objects.get(pk=row.pk)


def work() -> None:
    queues = [django_rq.get_queue(jobs.QUEUE), django_rq.get_queue(jobs.WRITEBACK_QUEUE)]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True)
    for queue in queues:
        assert queue.failed_job_registry.count == 0


def cloud_mailboxes(count: int) -> list[Mailbox]:
    """Cloud-managed mailboxes in as many different OUs as there are (the first ``count``)."""
    rows = list(
        Mailbox.objects.filter(authority=Authority.CLOUD, in_ad=True, in_exo=True)
        .exclude(ad_guid=None)
        .exclude(exo_object_id=None)
        .order_by("ou_norm", "upn")
    )
    by_ou: dict[str, Mailbox] = {}
    for row in rows:
        by_ou.setdefault(row.ou_norm, row)
    chosen = list(by_ou.values()) + [row for row in rows if row not in by_ou.values()]
    assert len(chosen) >= count
    return chosen[:count]


def test_a_direct_ad_edit_on_a_cloud_managed_mailbox_is_found_once_and_an_incremental_scan_reads_only_the_change(
    stack,
):
    directory, _exchange = stack
    first = scan(DriftScan.Mode.FULL)
    assert first.compared > 0 and first.found == DriftFinding.objects.count()
    baseline = set(DriftFinding.objects.values_list("pk", flat=True))
    (mailbox,) = cloud_mailboxes(1)
    edit_ad(directory, mailbox, "extensionAttribute7", "edited behind the portal's back")

    second = scan()
    assert second.mode == DriftScan.Mode.INCREMENTAL
    # AD's change stamps are exact: only the user edited since the full scan's mark is read. Exchange's WhenChangedUTC
    # is to the second and its read overlaps by one, which on a tenant seeded a moment ago is all of it.
    assert second.ad_read == 1 and first.ad_read > 1
    (finding,) = DriftFinding.objects.exclude(pk__in=baseline)
    assert (finding.mailbox_id, finding.attribute, finding.ad_value) == (
        mailbox.pk, "CustomAttribute7", "edited behind the portal's back",
    )  # fmt: skip
    assert finding.cloud_value == mailbox.exo_values.get("CustomAttribute7") and finding.scan_id == second.pk
    event = AuditEvent.objects.get(action="writeback.drift.found", object_id=str(second.pk))
    assert [item["id"] for item in event.after["findings"]] == [finding.pk]

    # Edited again, and a full scan: the open finding for that attribute is not recorded a second time.
    edit_ad(directory, mailbox, "extensionAttribute7", "edited twice")
    assert scan(DriftScan.Mode.FULL).found == 0
    assert scan().found == 0
    assert DriftFinding.objects.filter(mailbox=mailbox, attribute="CustomAttribute7").count() == 1


def test_an_incremental_scan_finds_an_edit_made_in_exchange_that_ad_does_not_hold(stack):
    _directory, _exchange = stack
    scan(DriftScan.Mode.FULL)
    (mailbox,) = cloud_mailboxes(1)
    exo = ExchangeOnlineClient(ExchangeConfig.from_settings())
    exo.set_mailbox(str(mailbox.exo_object_id), CustomAttribute13="edited in the cloud")
    try:
        later = scan()
        assert later.mode == DriftScan.Mode.INCREMENTAL and later.ad_read == 0
        finding = DriftFinding.objects.get(mailbox=mailbox, attribute="CustomAttribute13")
        assert finding.cloud_value == "edited in the cloud" and finding.ad_value is None
    finally:
        exo.set_mailbox(str(mailbox.exo_object_id), CustomAttribute13="")


def test_repair_writes_the_cloud_value_into_ad_and_resolves_the_finding(stack, make_user):
    directory, _exchange = stack
    scan(DriftScan.Mode.FULL)
    (mailbox,) = cloud_mailboxes(1)
    cloud = mailbox.exo_values.get("CustomAttribute8")
    edit_ad(directory, mailbox, "extensionAttribute8", "wrong in AD")
    scan()
    finding = DriftFinding.objects.get(mailbox=mailbox, attribute="CustomAttribute8", resolved_at=None)
    # The hourly import then reads AD's value into the portal's picture of AD: the repair's writeback no longer sees
    # it as an edit behind the portal's back, and still closes the scan's finding.
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.INCREMENTAL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    assert Mailbox.objects.get(pk=mailbox.pk).ad_values["CustomAttribute8"] == "wrong in AD"
    helpdesk = make_user("hanna", Role.HELPDESK, scopes=(mailbox.ou_norm,))
    assert finding in drift_finding_list(user=helpdesk)

    task = drift_finding_repair(finding_id=finding.pk, actor=helpdesk, reason="ticket 9")
    assert task.source == "drift_repair" and task.requested_by == helpdesk
    with pytest.raises(DriftError, match="already on its way"):
        drift_finding_repair(finding_id=finding.pk, actor=helpdesk)
    work()
    task.refresh_from_db()
    assert task.state == WritebackTask.State.DONE
    assert read_ad(directory, mailbox, "extensionAttribute8") == ([cloud] if cloud else [])
    finding.refresh_from_db()
    assert finding.resolved_at is not None and finding.resolution == DriftFinding.Resolution.OVERWRITTEN
    assert finding.repair_task_id == task.pk
    requested = AuditEvent.objects.get(action="writeback.drift.repair_requested", object_id=str(finding.pk))
    assert requested.actor == helpdesk and requested.reason == "ticket 9"
    assert AuditEvent.objects.filter(action="writeback.drift.resolved", object_id=str(finding.pk)).exists()
    assert finding not in drift_finding_list(user=helpdesk)
    assert scan().found == 0  # AD agrees again


def test_bulk_repair_queues_one_writeback_per_mailbox_and_resolves_every_finding(stack, make_user):
    directory, _exchange = stack
    scan(DriftScan.Mode.FULL)
    first, second = cloud_mailboxes(2)
    edit_ad(directory, first, "extensionAttribute9", "bulk one")
    edit_ad(directory, first, "extensionAttribute10", "bulk two")
    edit_ad(directory, second, "extensionAttribute9", "bulk three")
    scan()
    admin = make_user("adam", Role.ADMIN)
    findings = drift_finding_list(user=admin, attribute="")
    ids = list(findings.filter(mailbox__in=[first, second]).values_list("pk", flat=True))
    assert len(ids) == 3

    tasks = drift_findings_repair(finding_ids=ids, actor=admin, reason="clean-up")
    assert sorted(task.mailbox_id for task in tasks) == sorted([first.pk, second.pk])
    event = AuditEvent.objects.get(action="writeback.drift.bulk_repair")
    assert sorted(event.after["finding_ids"]) == sorted(ids) and event.actor == admin
    work()
    assert not DriftFinding.objects.filter(pk__in=ids, resolved_at=None).exists()
    assert read_ad(directory, first, "extensionAttribute10") == (
        [first.exo_values["CustomAttribute10"]] if first.exo_values.get("CustomAttribute10") else []
    )
    assert read_ad(directory, second, "extensionAttribute9") == (
        [second.exo_values["CustomAttribute9"]] if second.exo_values.get("CustomAttribute9") else []
    )


def test_help_desk_cannot_repair_a_finding_outside_its_ou_and_the_attempt_is_audited(stack, make_user):
    directory, _exchange = stack
    scan(DriftScan.Mode.FULL)
    mine, theirs = cloud_mailboxes(2)
    assert mine.ou_norm != theirs.ou_norm
    edit_ad(directory, theirs, "extensionAttribute11", "not yours")
    scan()
    finding = DriftFinding.objects.get(mailbox=theirs, attribute="CustomAttribute11", resolved_at=None)
    helpdesk = make_user("sally", Role.HELPDESK, scopes=(mine.ou_norm,))
    assert finding not in drift_finding_list(user=helpdesk)

    with pytest.raises(DriftError, match="Only help desk for this mailbox's OU"):
        drift_finding_repair(finding_id=finding.pk, actor=helpdesk)
    with pytest.raises(DriftError, match="Only help desk for this mailbox's OU"):
        drift_findings_repair(finding_ids=[finding.pk], actor=helpdesk)
    denied = AuditEvent.objects.filter(action="writeback.drift.denied", actor=helpdesk)
    assert denied.count() == 2
    finding.refresh_from_db()
    assert finding.repair_task_id is None and not WritebackTask.objects.filter(mailbox=theirs).exists()


def test_auto_repair_writes_the_cloud_value_over_what_the_scan_finds(stack, settings):
    directory, _exchange = stack
    scan(DriftScan.Mode.FULL)
    (mailbox,) = cloud_mailboxes(1)
    edit_ad(directory, mailbox, "extensionAttribute12", "auto")
    settings.DRIFT_AUTO_REPAIR = True
    scan()
    finding = DriftFinding.objects.get(mailbox=mailbox, attribute="CustomAttribute12")
    assert finding.repair_task is not None and finding.repair_task.requested_by is None
    work()
    finding.refresh_from_db()
    assert finding.resolved_at is not None
    assert read_ad(directory, mailbox, "extensionAttribute12") == (
        [mailbox.exo_values["CustomAttribute12"]] if mailbox.exo_values.get("CustomAttribute12") else []
    )


def test_the_schedule_requests_the_scan_due_and_is_off_at_zero(stack, settings):
    settings.DRIFT_SCAN_INTERVAL_MINUTES = 0
    assert drift.drift_scan_schedule() == (None, False)
    settings.DRIFT_SCAN_INTERVAL_MINUTES = 60
    job, _created = drift.drift_scan_schedule()
    assert job is not None and drift.drift_scan_schedule()[0].id == job.id
    assert drift._request_due().startswith("queued full drift scan")
    assert drift._request_due().startswith("skipped:")  # one scan at a time
    assert AuditEvent.objects.filter(action="writeback.drift_scan.scheduled").count() == 1


def test_a_finding_is_closed_when_the_two_sides_agree_again(stack):
    directory, _exchange = stack
    scan(DriftScan.Mode.FULL)
    (mailbox,) = cloud_mailboxes(1)
    cloud = mailbox.exo_values.get("CustomAttribute14")
    edit_ad(directory, mailbox, "extensionAttribute14", "for a moment")
    scan()
    finding = DriftFinding.objects.get(mailbox=mailbox, attribute="CustomAttribute14", resolved_at=None)
    with ldap_connection(directory) as conn:  # someone puts AD right by hand
        conn.search(directory.base_dn, f"(objectGUID={escape_bytes(mailbox.ad_guid.bytes_le)})", attributes=["1.1"])
        change = [(ldap3.MODIFY_REPLACE, [cloud])] if cloud else [(ldap3.MODIFY_DELETE, [])]
        assert conn.modify(conn.response[0]["dn"], {"extensionAttribute14": change}), conn.result
    later = scan()
    finding.refresh_from_db()
    assert finding.resolution == DriftFinding.Resolution.AGREES and finding.resolved_at is not None
    assert later.cleared == 1
    event = AuditEvent.objects.get(action="writeback.drift.cleared", object_id=str(later.pk))
    assert [item["id"] for item in event.after["findings"]] == [finding.pk]


def test_a_repair_writes_the_value_exchange_holds_when_it_runs_not_the_one_the_portal_last_read(stack, make_user):
    """The cloud holds authority (exchange-facts §2), so a repair reads Exchange Online just before it writes: an edit
    made in the cloud after the scan is what AD gets, and the portal's picture of the cloud moves with it."""
    directory, _exchange = stack
    scan(DriftScan.Mode.FULL)
    (mailbox,) = cloud_mailboxes(1)
    edit_ad(directory, mailbox, "extensionAttribute11", "wrong in AD")
    scan()
    finding = DriftFinding.objects.get(mailbox=mailbox, attribute="CustomAttribute11", resolved_at=None)
    exo = ExchangeOnlineClient(ExchangeConfig.from_settings())
    exo.set_mailbox(str(mailbox.exo_object_id), CustomAttribute11="changed in the cloud since")
    version = Mailbox.objects.get(pk=mailbox.pk).version
    try:
        task = drift_finding_repair(finding_id=finding.pk, actor=make_user("ines", Role.HELPDESK), reason="t")
        work()
        task.refresh_from_db()
        assert task.state == WritebackTask.State.DONE, task.error
        assert task.desired["CustomAttribute11"] == "changed in the cloud since"
        assert read_ad(directory, mailbox, "extensionAttribute11") == ["changed in the cloud since"]
        mailbox.refresh_from_db()
        assert mailbox.exo_values["CustomAttribute11"] == "changed in the cloud since" and mailbox.version > version
        assert not mailbox.has_drift
        finding.refresh_from_db()
        assert finding.resolved_at is not None
    finally:
        exo.set_mailbox(str(mailbox.exo_object_id), CustomAttribute11="")


def test_a_repair_of_a_mailbox_whose_authority_went_back_to_ad_fails_and_leaves_ad_alone(stack, make_user):
    """Reverting IsExchangeCloudManaged hands the Exchange attributes back to AD (exchange-facts §1): there is no
    cloud value to repair AD with, so the repair fails with that reason and AD keeps its value."""
    directory, exchange = stack
    scan(DriftScan.Mode.FULL)
    (mailbox,) = cloud_mailboxes(1)
    edit_ad(directory, mailbox, "extensionAttribute6", "kept in AD")
    scan()
    finding = DriftFinding.objects.get(mailbox=mailbox, attribute="CustomAttribute6", resolved_at=None)
    exchange.update_mailbox(str(mailbox.exo_object_id), IsExchangeCloudManaged=False)
    try:
        task = drift_finding_repair(finding_id=finding.pk, actor=make_user("ivo", Role.HELPDESK), reason="t")
        work()
        task.refresh_from_db()
        assert task.state == WritebackTask.State.FAILED and "no longer cloud-managed" in task.error
        assert read_ad(directory, mailbox, "extensionAttribute6") == ["kept in AD"]
        finding.refresh_from_db()
        assert finding.resolved_at is None
    finally:
        exchange.update_mailbox(str(mailbox.exo_object_id), IsExchangeCloudManaged=True)
        original = mailbox.exo_values.get("CustomAttribute6")
        with ldap_connection(directory) as conn:  # AD as it was, the attribute absent when the cloud has none
            values = [original] if original else []
            assert conn.modify(mailbox.dn, {"extensionAttribute6": [(ldap3.MODIFY_REPLACE, values)]}), conn.result
