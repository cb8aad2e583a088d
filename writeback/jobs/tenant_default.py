"""The job that switches on the tenant default once two approvers have confirmed it (soa.services.tenant_default).

On the common lifecycle (writeback.jobs.lifecycle): claim the request's row (QUEUED -> RUNNING), then outside any
transaction count the blockers again (something may have changed since the approvals: a new on-prem mailbox, a failed
writeback) and read Get-OrganizationConfig. When the read already shows the default on, nothing is sent: a retried
job, or one whose first call went through before its worker died, never calls twice. Otherwise the call
(``Set-OrganizationConfig -ExchangeAttributesCloudManagedByDefault``) is audited before it is sent, sent, and the
configuration read back; the request ends DONE when the read-back shows the default on, FAILED with the reason
otherwise. Each step's audit event is written in the same transaction as its row's move.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from soa.models import TenantDefaultRequest
from soa.services.tenant_default import blockers_refusal, tenant_default_enqueue
from writeback.exchange import ExchangeOnlineClient, ExchangeOnlineError
from writeback.jobs.clients import exchange_client
from writeback.jobs.lifecycle import (
    FAIL,
    RetryPolicy,
    Work,
    perform,
    run_claim,
    run_fail,
    run_finish,
    run_requeue_lost,
    run_sweep,
)
from writeback.tenant_default import (
    ENABLE_PARAMETER,
    from_organization,
    tenant_default_blockers,
    tenant_default_forget,
)

logger = logging.getLogger(__name__)

# One call and two reads, each within the client's retries: a request RUNNING this long without moving is dead.
STALE_AFTER = dt.timedelta(minutes=20)
RETRY = RetryPolicy(max_attempts=1, stale=FAIL)
# An approved request whose job is not in Redis this long after it was asked for is queued again.
REQUEUE_AFTER = dt.timedelta(minutes=5)


class TenantDefaultRefused(Exception):
    """A blocker held at the moment of the call, or the read-back did not show the default on."""


def _claim(request_id: int) -> TenantDefaultRequest | None:
    row = run_claim(TenantDefaultRequest, request_id, action="soa.tenant_default.started")
    if row is not None:
        TenantDefaultRequest.objects.filter(pk=row.pk).update(attempts=row.attempts + 1)
    return row


def _read_back(client: ExchangeOnlineClient, property_name: str) -> dict[str, Any]:
    read = from_organization(client.get_organization_config(), property_name=property_name, read_at=timezone.now())
    return {"property": property_name, "value": read.enabled, "present": read.present, "tenant": read.tenant_name,
            "read_at": read.read_at.isoformat()}  # fmt: skip


def tenant_default_switch(row: TenantDefaultRequest, client: ExchangeOnlineClient | None = None) -> dict[str, Any]:
    """The run: blockers again, read, call unless already on, read back. Returns what ``_finish`` records."""
    refusal = blockers_refusal(tenant_default_blockers())
    if refusal:
        raise TenantDefaultRefused(f"{refusal} Nothing was sent to Exchange Online.")
    client = client or exchange_client()
    before = _read_back(client, row.property_name)
    if before["value"] is True:
        return {"called": False, "result": "Exchange Online already showed the default on; nothing was sent.",
                "read_back": before}  # fmt: skip
    with transaction.atomic():
        audit_record(
            actor=None, action="soa.tenant_default.calling", obj=row,
            after={"cmdlet": "Set-OrganizationConfig", "parameters": {ENABLE_PARAMETER: True}, "read_before": before},
        )  # fmt: skip
    result = client.set_organization_config(**{ENABLE_PARAMETER: True})
    TenantDefaultRequest.objects.filter(pk=row.pk).update(called=True, heartbeat_at=timezone.now())
    answer = "; ".join(result.warnings) or "Set-OrganizationConfig succeeded."
    after = _read_back(client, row.property_name)
    if after["value"] is not True:
        shown = "does not have the property" if not after["present"] else f"shows {after['value']!r}"
        raise TenantDefaultRefused(
            f"Set-OrganizationConfig answered ({answer}) but Get-OrganizationConfig {shown} for {row.property_name}. "
            "Check EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY against what Exchange shows, then retry: the job reads "
            "first and does not call again once the default shows on."
        )
    return {"called": True, "result": answer, "read_back": after}


def _finish(row: TenantDefaultRequest, outcome: dict[str, Any]) -> TenantDefaultRequest | None:
    tenant_default_forget()
    return run_finish(
        TenantDefaultRequest, row.pk, action="soa.tenant_default.done", called=outcome["called"],
        result=outcome["result"], read_back=outcome["read_back"],
    )  # fmt: skip


def _fail(row: TenantDefaultRequest, error: str) -> TenantDefaultRequest | None:
    tenant_default_forget()
    called = TenantDefaultRequest.objects.filter(pk=row.pk).values_list("called", flat=True).first() or False
    return run_fail(TenantDefaultRequest, row.pk, error, action="soa.tenant_default.failed", called=called)


def work(client: ExchangeOnlineClient | None = None) -> Work:
    return Work(
        name="Tenant default switch",
        claim=_claim,
        run=lambda row: tenant_default_switch(row, client),
        finish=_finish,
        fail=_fail,
        expected=(ExchangeOnlineError, TenantDefaultRefused),
    )


def tenant_default_job(request_id: int) -> Any:
    """RQ entrypoint: switch on the tenant default for an approved request. Safe to run twice."""
    return perform(work(), request_id, correlation=f"tenant-default-{request_id}")


def tenant_default_sweep() -> None:
    """Fail a request left RUNNING by a dead worker, so an administrator may retry it (the retry reads first), and
    queue again an approved one whose job Redis lost (down when the second approval committed, or restarted empty)."""
    run_sweep(TenantDefaultRequest, stale_after=STALE_AFTER, action="soa.tenant_default.failed", policy=RETRY)
    run_requeue_lost(TenantDefaultRequest, older_than=REQUEUE_AFTER, action="soa.tenant_default.requeued",
                     requeue=tenant_default_enqueue)  # fmt: skip
