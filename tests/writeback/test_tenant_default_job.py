"""The job that switches on the tenant default (writeback.jobs.tenant_default), against the emulator over HTTPS with a
real RQ worker: it re-checks the blockers at the moment of the call, reads Get-OrganizationConfig first (no second
call when the default already shows on), calls Set-OrganizationConfig -ExchangeAttributesCloudManagedByDefault, reads
back, and audits each step (exchange-facts §1.4, §1.9)."""

import django_rq
import pytest
from rq import SimpleWorker

from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import TenantDefaultState
from soa.jobs import TENANT_DEFAULT_JOB
from soa.models import TenantDefaultRequest
from soa.services.tenant_default import tenant_default_approve, tenant_default_request_create
from tests.exchange_fixtures import portal_points_at
from tests.soa.test_wave_support import make_mailbox
from writeback.jobs.tenant_default import tenant_default_job
from writeback.tenant_default import tenant_default_blockers, tenant_default_read

pytestmark = pytest.mark.django_db(transaction=True)

ON = "ExchangeAttributesCloudManagedByDefault"
READ_BACK = "BlockExchangeProvisioningFromOnPremEnabled"


@pytest.fixture
def tenant(directory, exo_clean):
    with portal_points_at(directory, exo_clean):
        yield exo_clean


def approved(make_user) -> TenantDefaultRequest:
    """A request asked and approved twice through the services, as the pages do (the read names the tenant)."""
    read = tenant_default_read(fresh=True)
    assert read.error == "" and read.enabled is False, read
    request = tenant_default_request_create(
        actor=make_user("job-admin", Role.ADMIN), reason="all moved", tenant_name=read.tenant_name,
        property_name=read.property_name, enabled=read.enabled, blockers=tenant_default_blockers(),
    )  # fmt: skip
    for name in ("job-approver-1", "job-approver-2"):
        request = tenant_default_approve(request_id=request.pk, actor=make_user(name, Role.APPROVER),
                                         typed_name=read.tenant_name, blockers=tenant_default_blockers())  # fmt: skip
    return request


def run_queued() -> None:
    queue = django_rq.get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def organization(exo_invoke) -> dict:
    return exo_invoke("Get-OrganizationConfig").json()["value"][0]


def actions(request) -> list[str]:
    events = AuditEvent.objects.filter(object_id=str(request.pk), action__startswith="soa.tenant_default.")
    return list(events.order_by("id").values_list("action", flat=True))


def test_the_second_approval_queues_a_job_that_switches_it_on_and_reads_it_back(tenant, make_user, exo_invoke):
    request = approved(make_user)
    row = TenantDefaultRequest.objects.get(pk=request.pk)
    assert row.state == TenantDefaultState.QUEUED and row.job_id
    job = django_rq.get_queue("default").fetch_job(row.job_id)
    assert job.func_name == TENANT_DEFAULT_JOB and job.args == (request.pk,)
    run_queued()
    row.refresh_from_db()
    assert row.state == TenantDefaultState.DONE, row.error
    assert row.called is True and row.attempts == 1
    assert row.read_back["property"] == READ_BACK and row.read_back["value"] is True
    assert organization(exo_invoke)[READ_BACK] is True
    assert tenant.counters()["carried_out"] == {"Set-OrganizationConfig": 1}
    assert actions(request) == [
        "soa.tenant_default.requested", "soa.tenant_default.approved", "soa.tenant_default.approved",
        "soa.tenant_default.started", "soa.tenant_default.calling", "soa.tenant_default.done",
    ]  # fmt: skip
    calling = AuditEvent.objects.get(action="soa.tenant_default.calling", object_id=str(request.pk))
    assert calling.after["parameters"] == {ON: True} and calling.after["read_before"]["value"] is False
    assert tenant_default_read().enabled is True  # the page's cached read was dropped when the job finished
    tenant_default_job(request.pk)  # delivered again: the row is done, nothing is claimed or sent
    assert tenant.counters()["carried_out"] == {"Set-OrganizationConfig": 1}


def test_nothing_is_sent_when_exchange_already_shows_the_default_on(tenant, make_user, exo_invoke):
    request = approved(make_user)
    assert exo_invoke("Set-OrganizationConfig", {ON: True}).status_code == 200  # someone did it in PowerShell meanwhile
    run_queued()
    row = TenantDefaultRequest.objects.get(pk=request.pk)
    assert row.state == TenantDefaultState.DONE and row.called is False
    assert "already showed the default on" in row.result and row.read_back["value"] is True
    assert tenant.counters()["carried_out"] == {"Set-OrganizationConfig": 1}  # the PowerShell one only
    assert "soa.tenant_default.calling" not in actions(request)


def test_a_blocker_at_the_moment_of_the_call_fails_the_job_without_calling(tenant, make_user, exo_invoke):
    request = approved(make_user)
    make_mailbox("Created After The Approvals")
    run_queued()
    row = TenantDefaultRequest.objects.get(pk=request.pk)
    assert row.state == TenantDefaultState.FAILED and row.called is False
    assert "AD still masters: 1" in row.error and "Nothing was sent" in row.error
    assert organization(exo_invoke)[READ_BACK] is False
    assert tenant.counters()["carried_out"] == {}
    assert actions(request)[-1] == "soa.tenant_default.failed"


def test_a_read_back_without_the_property_fails_and_the_retry_does_not_call_again(tenant, make_user, settings, client):
    settings.EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY = "NoSuchProperty"
    request = approved_with_unknown_property(make_user)
    run_queued()
    row = TenantDefaultRequest.objects.get(pk=request.pk)
    assert row.state == TenantDefaultState.FAILED and row.called is True
    assert "does not have the property" in row.error and "EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY" in row.error
    assert tenant.counters()["carried_out"] == {"Set-OrganizationConfig": 1}
    # The administrator fixes the setting and retries: the job reads first, sees it on, and does not call again.
    settings.EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY = READ_BACK
    TenantDefaultRequest.objects.filter(pk=request.pk).update(property_name=READ_BACK)
    client.force_login(request.requested_by)
    assert client.post(f"/mailboxes/readiness/tenant-default/{request.pk}/retry/").status_code == 302
    run_queued()
    row.refresh_from_db()
    assert row.state == TenantDefaultState.DONE and row.called is False, row.error
    assert tenant.counters()["carried_out"] == {"Set-OrganizationConfig": 1}
    assert "soa.tenant_default.retried" in actions(request)


def approved_with_unknown_property(make_user) -> TenantDefaultRequest:
    """As ``approved``, while the configured read-back property is one Exchange does not show."""
    read = tenant_default_read(fresh=True)
    assert read.error == "" and read.present is False and read.enabled is None
    request = tenant_default_request_create(
        actor=make_user("job-admin", Role.ADMIN), reason="all moved", tenant_name=read.tenant_name,
        property_name=read.property_name, enabled=read.enabled, blockers=tenant_default_blockers(),
    )  # fmt: skip
    for name in ("job-approver-1", "job-approver-2"):
        tenant_default_approve(request_id=request.pk, actor=make_user(name, Role.APPROVER),
                               typed_name=read.tenant_name, blockers=tenant_default_blockers())  # fmt: skip
    return request


def test_a_switch_whose_worker_died_is_failed_by_the_sweep_for_an_administrator_to_retry(make_user):
    import datetime as dt

    from django.utils import timezone

    from writeback.jobs.sweep import sweep_job

    request = tenant_default_request_create(
        actor=make_user("sweep-admin", Role.ADMIN), reason="moved", tenant_name="corp.onmicrosoft.com",
        property_name=READ_BACK, enabled=False, blockers=[],
    )  # fmt: skip
    long_ago = timezone.now() - dt.timedelta(hours=1)
    TenantDefaultRequest.objects.filter(pk=request.pk).update(
        state=TenantDefaultState.RUNNING, started_at=long_ago, heartbeat_at=long_ago
    )
    # Approved while Redis was down (made directly: the services keep one request open at a time).
    lost = TenantDefaultRequest.objects.create(
        tenant_name="corp.onmicrosoft.com", property_name="Other", reason="moved", requested_at=long_ago,
        requested_by=request.requested_by, state=TenantDefaultState.QUEUED,
    )  # fmt: skip
    sweep_job()
    row = TenantDefaultRequest.objects.get(pk=request.pk)
    assert row.state == TenantDefaultState.FAILED and "Its worker stopped" in row.error
    assert actions(request)[-1] == "soa.tenant_default.failed"
    # An approved request whose job Redis lost is queued again.
    job_id = TenantDefaultRequest.objects.get(pk=lost.pk).job_id
    assert job_id and django_rq.get_queue("default").fetch_job(job_id).func_name == TENANT_DEFAULT_JOB
    assert actions(lost)[-1] == "soa.tenant_default.requeued"
