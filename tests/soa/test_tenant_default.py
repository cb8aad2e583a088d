"""Switching on the tenant default, guarded (soa.services.tenant_default, writeback.tenant_default): refused while any
blocker holds (each blocker alone, and allowed once it is fixed), four-eyes with two distinct approvers other than the
requester, the typed tenant name, and the audit of each step.

exchange-facts §1.9: Microsoft says not to switch the default on while recipients are still created on-premises or
before every on-premises mailbox has moved, and only Microsoft Support can undo it for the users it affected.
"""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, TenantDefaultState
from soa.models import TenantDefaultApproval, TenantDefaultRequest
from soa.services import SoaError
from soa.services.tenant_default import (
    tenant_default_approve,
    tenant_default_cancel,
    tenant_default_request_create,
)
from tests.soa.test_wave_support import SALES, make_mailbox
from writeback.models import DriftFinding, WritebackTask
from writeback.tenant_default import tenant_default_blockers

pytestmark = pytest.mark.django_db

TENANT = "corp.onmicrosoft.com"
PROPERTY = "BlockExchangeProvisioningFromOnPremEnabled"


@pytest.fixture
def cast(make_user):
    return {
        "admin": make_user("td-admin", Role.ADMIN),
        "a1": make_user("td-approver-1", Role.APPROVER),
        "a2": make_user("td-approver-2", Role.APPROVER),
    }


def ask(actor, **overrides) -> TenantDefaultRequest:
    values = {"reason": "every mailbox has moved", "tenant_name": TENANT, "property_name": PROPERTY, "enabled": False,
              "blockers": tenant_default_blockers()}  # fmt: skip
    return tenant_default_request_create(actor=actor, **{**values, **overrides})


def approve(request, actor, typed=TENANT) -> TenantDefaultRequest:
    return tenant_default_approve(request_id=request.pk, actor=actor, typed_name=typed,
                                  blockers=tenant_default_blockers())  # fmt: skip


def holding() -> dict[str, int]:
    return {blocker.key: blocker.count for blocker in tenant_default_blockers() if blocker.holds}


def _cloud_mailbox(**fields):
    return make_mailbox(f"Cloud {uuid.uuid4().hex[:6]}", authority=Authority.CLOUD, **fields)


# -- each blocker refuses, and the request is allowed once it is fixed ---------------------------------------------


def test_a_mailbox_still_mastered_in_ad_blocks_until_it_is_cloud_managed(cast):
    mailbox = make_mailbox("Still In AD")
    assert holding() == {"ad_managed": 1}
    with pytest.raises(SoaError, match="AD still masters: 1"):
        ask(cast["admin"])
    assert not TenantDefaultRequest.objects.exists()
    mailbox.authority = Authority.CLOUD
    mailbox.save()
    assert ask(cast["admin"]).state == TenantDefaultState.PENDING


def test_a_recipient_created_in_ad_recently_blocks_until_it_is_older_than_the_window(cast, settings):
    settings.TENANT_DEFAULT_RECENT_CREATION_DAYS = 30
    mailbox = _cloud_mailbox(ad_when_created=timezone.now() - dt.timedelta(days=2))
    assert holding() == {"recent_creation": 1}
    with pytest.raises(SoaError, match="created in AD in the last 30 days: 1"):
        ask(cast["admin"])
    mailbox.ad_when_created = timezone.now() - dt.timedelta(days=31)
    mailbox.save()
    assert ask(cast["admin"]).state == TenantDefaultState.PENDING


def test_an_open_drift_finding_blocks_until_it_is_resolved(cast):
    finding = DriftFinding.objects.create(mailbox=_cloud_mailbox(), attribute="CustomAttribute1", ad_value="a",
                                          cloud_value="b")  # fmt: skip
    assert holding() == {"open_drift": 1}
    with pytest.raises(SoaError, match="Open drift findings: 1"):
        ask(cast["admin"])
    finding.resolved_at = timezone.now()
    finding.save()
    assert ask(cast["admin"]).state == TenantDefaultState.PENDING


def test_a_failed_writeback_blocks_until_a_later_one_makes_it_good(cast):
    mailbox = _cloud_mailbox()
    WritebackTask.objects.create(mailbox=mailbox, state=WritebackTask.State.FAILED, source="manual", error="busy")
    assert holding() == {"writeback_unhealthy": 1}
    with pytest.raises(SoaError, match="Writebacks failed or stalled: 1"):
        ask(cast["admin"])
    WritebackTask.objects.create(mailbox=mailbox, state=WritebackTask.State.DONE, source="manual")
    assert ask(cast["admin"]).state == TenantDefaultState.PENDING


def test_a_stalled_writeback_blocks_until_it_moves(cast):
    long_ago = timezone.now() - dt.timedelta(minutes=30)
    task = WritebackTask.objects.create(mailbox=_cloud_mailbox(), state=WritebackTask.State.RUNNING, source="manual",
                                        started_at=long_ago, heartbeat_at=long_ago)  # fmt: skip
    assert holding() == {"writeback_unhealthy": 1}
    with pytest.raises(SoaError, match="Writebacks failed or stalled: 1"):
        ask(cast["admin"])
    WritebackTask.objects.filter(pk=task.pk).update(state=WritebackTask.State.DONE, finished_at=timezone.now())
    assert ask(cast["admin"]).state == TenantDefaultState.PENDING


def test_a_blocker_that_appears_after_the_request_refuses_the_approval(cast):
    request = ask(cast["admin"])
    make_mailbox("Created After The Request")
    with pytest.raises(SoaError, match="AD still masters"):
        approve(request, cast["a1"])
    assert not TenantDefaultApproval.objects.exists()


# -- four-eyes ---------------------------------------------------------------------------------------------------


def test_two_distinct_approvers_other_than_the_requester_queue_the_switch(cast, make_user):
    requester = make_user("td-admin-approver", Role.ADMIN, Role.APPROVER)
    request = ask(requester, reason="ticket CHG-1")
    with pytest.raises(SoaError, match="You asked for this switch"):
        approve(request, requester)
    first = approve(request, cast["a1"])
    assert first.state == TenantDefaultState.PENDING
    with pytest.raises(SoaError, match="already approved"):
        approve(request, cast["a1"])
    second = approve(request, cast["a2"])
    assert second.state == TenantDefaultState.QUEUED and second.queued_at is not None
    assert sorted(second.approvals.values_list("approver__username", flat=True)) == ["td-approver-1", "td-approver-2"]
    with pytest.raises(SoaError, match="takes no more approvals"):
        approve(request, make_user("td-approver-3", Role.APPROVER))
    requested = AuditEvent.objects.get(action="soa.tenant_default.requested", object_id=str(request.pk))
    assert requested.reason == "ticket CHG-1" and requested.actor_name == "td-admin-approver"
    approved = AuditEvent.objects.filter(action="soa.tenant_default.approved", object_id=str(request.pk))
    assert [event.actor_name for event in approved.order_by("id")] == ["td-approver-1", "td-approver-2"]
    assert approved.order_by("id").last().after["state"] == TenantDefaultState.QUEUED


def test_who_may_ask_and_who_may_approve(cast, make_user):
    with pytest.raises(SoaError, match="Only an administrator"):
        ask(cast["a1"])
    request = ask(cast["admin"])
    with pytest.raises(SoaError, match="already open"):
        ask(make_user("td-admin-2", Role.ADMIN))
    scoped = make_user("td-approver-sales", Role.APPROVER, scopes=(SALES,))
    for refused in (scoped, make_user("td-auditor", Role.AUDITOR), make_user("td-operator", Role.WAVE_OPERATOR)):
        with pytest.raises(SoaError, match="whole tenant"):
            approve(request, refused)
    assert not TenantDefaultApproval.objects.exists()


def test_a_wrong_typed_name_is_refused_and_changes_nothing(cast):
    request = ask(cast["admin"])
    before = AuditEvent.objects.count()
    for typed in ("contoso.onmicrosoft.com", "", "corp", "corp.onmicrosoft.co"):
        with pytest.raises(SoaError, match="does not match the tenant's name"):
            approve(request, cast["a1"], typed=typed)
    assert AuditEvent.objects.count() == before
    assert not TenantDefaultApproval.objects.exists()
    assert TenantDefaultRequest.objects.get(pk=request.pk).state == TenantDefaultState.PENDING
    assert approve(request, cast["a1"], typed="  CORP.onmicrosoft.com ").approvals.count() == 1  # case and spaces


def test_a_request_needs_a_reason_and_is_refused_when_exchange_already_shows_it_on(cast):
    with pytest.raises(SoaError, match="Give the reason"):
        ask(cast["admin"], reason="  ")
    with pytest.raises(SoaError, match="already shows the tenant default switched on"):
        ask(cast["admin"], enabled=True)
    assert not TenantDefaultRequest.objects.exists()


def test_a_pending_request_can_be_cancelled_and_a_new_one_asked(cast):
    request = ask(cast["admin"])
    tenant_default_cancel(request_id=request.pk, actor=cast["admin"], reason="not this quarter")
    assert TenantDefaultRequest.objects.get(pk=request.pk).state == TenantDefaultState.CANCELLED
    with pytest.raises(SoaError, match="takes no more approvals"):
        approve(request, cast["a1"])
    assert AuditEvent.objects.filter(action="soa.tenant_default.cancelled", reason="not this quarter").exists()
    assert ask(cast["admin"]).state == TenantDefaultState.PENDING
