"""The readiness page's prerequisite checks that call out (writeback.jobs.prerequisites), against a private slapd and
HTTPS Exchange Online / Graph emulator, the test database and Redis: each flips from not met to met when its condition
is fixed, and a source that cannot be read leaves the check unknown with its error.

Microsoft's side as the emulator plays it: Graph's organization resource (Learn "organization resource type", "List
organization": ``onPremisesSyncEnabled``, ``onPremisesLastSyncDateTime``, application permission
Organization.Read.All); app-only Exchange needs Exchange.ManageAsApp plus an Entra role, Exchange Administrator being
the one Microsoft documents for IsExchangeCloudManaged since GA (exchange-facts §1.5, §4.1); Cloud Sync writes the
24 attributes of §2.2 into AD for cloud-managed mailboxes (§2.3).
"""

import datetime as dt

import django_rq
import ldap3
import pytest
from django.urls import reverse
from django.utils import timezone
from ldap3.utils.conv import escape_bytes
from rq import SimpleWorker

from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs
from soa.choices import Authority
from soa.models import Mailbox, PrerequisiteCheck, PrerequisiteInput
from tests.exchange_fixtures import private_tenant
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.jobs.prerequisites import connect_sync_check, exchange_role_check, writeback_check
from writeback.models import InventoryRun, WritebackTask

pytestmark = pytest.mark.django_db(transaction=True)

Status = PrerequisiteCheck.Status
USERS = 12
SEED = 53


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=USERS, seed=SEED) as (directory, exchange, _report):
        synced = sorted((m for m in exchange.mailboxes() if m.get("IsDirSynced")), key=lambda m: m["Alias"])
        for mailbox in synced[: len(synced) // 2]:
            exchange.update_mailbox(mailbox["ExternalDirectoryObjectId"], IsExchangeCloudManaged=True)
        yield directory, exchange


def inventory() -> None:
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE


@pytest.fixture
def stack(tenant):
    directory, exchange = tenant
    exchange.set_settings(app_directory_roles=["Exchange Administrator"])
    queue = django_rq.get_queue(jobs.QUEUE)
    queue.empty()
    inventory()
    yield directory, exchange
    exchange.set_settings(app_directory_roles=["Exchange Administrator"])


def cloud_mailbox() -> Mailbox:
    return Mailbox.objects.filter(authority=Authority.CLOUD, in_ad=True, in_exo=True).order_by("upn").first()


def test_last_sync_older_than_allowed_is_not_met_and_a_sync_cycle_makes_it_met(stack, settings):
    """Graph's organization carries onPremisesLastSyncDateTime (Learn "organization resource type"); Entra Connect's
    cycle is 30 minutes (exchange-facts §6), the portal allows ENTRA_CONNECT_SYNC_MAX_AGE_HOURS."""
    _directory, exchange = stack
    settings.ENTRA_CONNECT_SYNC_MAX_AGE_HOURS = 3
    old = (timezone.now() - dt.timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    exchange.set_organization(onPremisesLastSyncDateTime=old, onPremisesSyncEnabled=True)
    row = connect_sync_check()
    assert row.status == Status.NOT_MET, row.measured
    assert "older than the 3 h allowed" in row.measured
    assert row.evidence["onPremisesLastSyncDateTime"] == old
    assert "/v1.0/organization" in row.source

    exchange.sync()  # a sync cycle: Graph shows it as the last sync
    row = connect_sync_check()
    assert row.status == Status.MET, row.measured

    exchange.set_organization(onPremisesSyncEnabled=False)
    assert connect_sync_check().status == Status.NOT_MET
    exchange.set_organization(onPremisesSyncEnabled=None)


def test_graph_unreachable_or_refusing_leaves_the_sync_check_unknown_with_the_error(stack, settings, tenant):
    _directory, exchange = stack
    settings.ENTRA_CLIENT_ID = exchange.clients["no_permission"]["client_id"]
    settings.ENTRA_CLIENT_SECRET_FILE = exchange.clients["no_permission"]["client_secret_file"]
    row = connect_sync_check()
    assert row.status == Status.UNKNOWN
    assert "403" in row.error and "Organization.Read.All" in row.error

    settings.GRAPH_BASE_URL = "https://127.0.0.1:9"  # nothing listens there
    row = connect_sync_check()
    assert row.status == Status.UNKNOWN and "No answer from Microsoft Graph" in row.error


def _canary(mailbox: Mailbox) -> None:
    PrerequisiteInput.objects.create(kind=PrerequisiteInput.Kind.CANARY, mailbox=mailbox)


def test_the_canary_flip_is_refused_without_the_apps_role_and_accepted_with_it(stack):
    """Without an Entra role allowing IsExchangeCloudManaged (exchange-facts §1.5) Exchange answers 403 (§4.4); the
    flip sets the value the mailbox already has, so nothing changes either way."""
    _directory, exchange = stack
    mailbox = cloud_mailbox()
    _canary(mailbox)
    before = exchange.get_mailbox(mailbox.upn)

    exchange.set_settings(app_directory_roles=["Exchange Recipient Administrator"])
    row = exchange_role_check()
    assert row.status == Status.NOT_MET, row.measured
    assert "403" in row.measured and "IsExchangeCloudManaged" in row.evidence["exchange_error"]

    exchange.set_settings(app_directory_roles=[])  # no role at all: even Get-Mailbox is refused
    assert exchange_role_check().status == Status.NOT_MET

    exchange.set_settings(app_directory_roles=["Exchange Administrator"])
    row = exchange_role_check()
    assert row.status == Status.MET, row.measured
    assert row.evidence["before"] is True and row.evidence["read_back"] is True
    after = exchange.get_mailbox(mailbox.upn)
    assert after["IsExchangeCloudManaged"] == before["IsExchangeCloudManaged"]
    checked = AuditEvent.objects.filter(action="soa.prerequisites.canary_checked").order_by("id")
    assert [event.after["status"] for event in checked] == ["not_met", "not_met", "met"]


def test_writeback_evidence_absent_is_not_met_and_present_is_met(stack, settings):
    """Cloud Sync writes extensionAttribute1-15 (CustomAttribute1-15) of cloud-managed mailboxes into AD (§2.2, §2.3):
    a cloud value AD does not hold is not met; once AD holds it, written after the cloud change, it is met."""
    directory, exchange = stack
    settings.PREREQUISITE_WRITEBACK_SETTLE_MINUTES = 0
    settings.PREREQUISITE_WRITEBACK_SAMPLE = 1  # the newest cloud change only: the one made here
    mailbox = cloud_mailbox()
    stamp = f"cloud-{timezone.now():%H%M%S%f}"
    client = ExchangeOnlineClient(ExchangeConfig.from_settings())
    client.set_mailbox(mailbox.upn, CustomAttribute7=stamp)
    inventory()

    row = writeback_check()
    assert row.status == Status.NOT_MET, (row.measured, row.error)
    assert row.evidence["examples"] == [{"upn": mailbox.upn, "attributes": ["CustomAttribute7"]}]
    assert directory.url in row.source

    # What Cloud Sync would do: write the cloud's value into the AD user.
    server = ldap3.Server(directory.url, get_info=ldap3.NONE)
    with ldap3.Connection(server, directory.bind_dn, directory.password, auto_bind=True) as conn:
        conn.search(directory.base_dn, f"(objectGUID={escape_bytes(mailbox.ad_guid.bytes_le)})", attributes=["1.1"])
        assert conn.modify(conn.response[0]["dn"], {"extensionAttribute7": [(ldap3.MODIFY_REPLACE, [stamp])]})
    inventory()  # the next inventory reads Exchange again after the AD write

    row = writeback_check()
    assert row.status == Status.MET, row.measured
    assert row.evidence["newest_write"]["upn"] == mailbox.upn


def test_changes_the_portal_wrote_back_itself_are_no_evidence_of_cloud_sync(stack, settings):
    settings.PREREQUISITE_WRITEBACK_SETTLE_MINUTES = 0
    for mailbox in Mailbox.objects.filter(authority=Authority.CLOUD):
        WritebackTask.objects.create(mailbox=mailbox, state=WritebackTask.State.DONE, source="manual",
                                     finished_at=timezone.now())  # fmt: skip
    row = writeback_check()
    assert row.status == Status.UNKNOWN
    assert row.evidence["judged"] == 0 and row.evidence["excluded_portal_writes"] > 0


def test_directory_unreachable_leaves_the_writeback_check_unknown_with_the_error(stack, settings):
    settings.PREREQUISITE_WRITEBACK_SETTLE_MINUTES = 0
    settings.LDAP_URL = "ldap://127.0.0.1:9"
    settings.LDAP_TIMEOUT_SECONDS = 1
    row = writeback_check()
    assert row.status == Status.UNKNOWN and row.error


def test_check_now_queues_the_job_which_runs_every_check_against_the_emulator(stack, client, make_user):
    _directory, exchange = stack
    _canary(cloud_mailbox())
    admin = make_user("adele", Role.ADMIN)
    client.force_login(admin)
    response = client.post(reverse("prerequisite_check"))
    assert response.status_code == 302
    queue = django_rq.get_queue(jobs.QUEUE)
    assert [job.func_name for job in queue.jobs] == ["writeback.jobs.prerequisites.prerequisites_check_job"]
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert queue.failed_job_registry.count == 0
    results = dict(PrerequisiteCheck.objects.values_list("key", "status"))
    assert results["connect_sync"] == Status.MET
    assert results["exchange_role"] == Status.MET
    assert set(results) == {"connect_sync", "exchange_role", "writeback"}
    assert AuditEvent.objects.filter(action="soa.prerequisites.check_requested", actor=admin).count() == 1

    page = client.get(reverse("readiness"))
    assert page.status_code == 200
    assert b'data-testid="rd-prereq-connect_sync" data-status="met"' in page.content


def test_the_periodic_readiness_tick_runs_the_checks_and_repeats_the_flip_only_when_due(stack, settings):
    from writeback.jobs.readiness import _take

    settings.PREREQUISITE_ROLE_CHECK_HOURS = 24
    _canary(cloud_mailbox())
    assert "prerequisites" in _take()
    assert set(PrerequisiteCheck.objects.values_list("key", flat=True)) == {
        "connect_sync",
        "exchange_role",
        "writeback",
    }
    _take()  # the flip ran less than 24 hours ago: not again
    assert AuditEvent.objects.filter(action="soa.prerequisites.canary_checked").count() == 1
    PrerequisiteCheck.objects.filter(key="exchange_role").update(checked_at=timezone.now() - dt.timedelta(hours=25))
    _take()
    assert AuditEvent.objects.filter(action="soa.prerequisites.canary_checked").count() == 2


def test_exchange_failing_otherwise_than_refusing_leaves_the_role_check_unknown_with_the_error(stack):
    """A canary Exchange no longer knows: 404 (exchange-facts §4.4), which says nothing of the app's role."""
    _directory, exchange = stack
    mailbox = Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True).order_by("-upn").first()
    _canary(mailbox)
    exchange.delete_mailbox(mailbox.upn)
    try:
        row = exchange_role_check()
    finally:
        exchange.sync()  # Entra Connect brings the mailbox back from AD
    assert row.status == Status.UNKNOWN and "couldn't be found" in row.error
    assert row.evidence == {"canary": mailbox.upn}
