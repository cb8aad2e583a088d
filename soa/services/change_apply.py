"""Applying a change request: the state moves the apply job (writeback.jobs.changes) makes, each a service with its
audit event in the same transaction.

- ``change_request_claim``: VALIDATED or APPROVED -> APPLYING (``soa.change.applying``), one attempt more; or, for
  a request released for a retry (APPLYING without a heartbeat), the next attempt of it. None when there is nothing
  to claim: already applied or failed, being applied by another worker, cancelled.
- ``change_request_heartbeat``: the attempt is alive (not audited: it changes no state).
- ``change_request_release``: a retryable error; the request stays APPLYING (once applying it is never cancelled:
  Exchange Online may already hold part of it) without a heartbeat, with the error and when it is retried
  (``soa.change.released``); the job schedules the next attempt.
- ``change_request_finish``: APPLYING -> APPLIED with the per-system results (``soa.change.applied``); the
  mailbox's values of the side written, its addresses, drift and version updated, and the addresses it removed
  start their cool-down (``removed_addresses_record``), all in one transaction.
- ``change_request_fail``: APPLYING -> FAILED with the system's message (``soa.change.failed``).

The actor is the system (None): the person who asked is on the request, and every event carries the request's
correlation id, so the audit log shows the request, its Exchange write and its AD write under one id.
"""

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from soa import jobs
from soa.choices import CHANGE_READY_STATES, CHANGE_TRANSITIONS, ChangeState
from soa.models import ChangeRequest, Mailbox, MailboxAddress
from soa.services import SoaError
from soa.services.changes import removed_addresses_record
from soa.values import refresh_drift, split_proxy

# Which side's values an apply wrote, for ``change_request_finish``.
EXCHANGE = "exchange"
DIRECTORY = "directory"


def _require(request: ChangeRequest, target: str) -> None:
    if target not in CHANGE_TRANSITIONS[request.state]:
        raise SoaError(f"Change request #{request.pk} is {request.get_state_display().lower()}; it cannot become "
                       f"{ChangeState(target).label.lower()}.")  # fmt: skip


def change_request_claim(*, request_id: int) -> ChangeRequest | None:
    """Take a ready request (or one released for a retry) for this worker: APPLYING, one attempt more, a first
    heartbeat, audited ``soa.change.applying``. None when another worker holds it or it is not waiting to be applied,
    so a job delivered twice applies the request once."""
    with transaction.atomic():
        request = (
            ChangeRequest.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("mailbox")
            .filter(pk=request_id)
            .first()
        )
        if request is None:
            return None
        released = request.state == ChangeState.APPLYING and request.heartbeat_at is None
        if request.state not in CHANGE_READY_STATES and not released:
            return None
        if not released:
            _require(request, ChangeState.APPLYING)
        before = request.audit_snapshot()
        now = timezone.now()
        request.state = ChangeState.APPLYING
        request.attempts += 1
        request.started_at = request.started_at or now
        request.heartbeat_at = now
        request.save(update_fields=["state", "attempts", "started_at", "heartbeat_at", "updated_at"])
        audit_record(actor=None, action="soa.change.applying", obj=request, before=before,
                     after={**request.audit_snapshot(), "attempt": request.attempts})  # fmt: skip
    return request


def change_request_heartbeat(*, request_id: int) -> bool:
    """Say the attempt is alive; False when the request is no longer this attempt's (the sweep released it)."""
    return bool(
        ChangeRequest.objects.filter(pk=request_id, state=ChangeState.APPLYING, heartbeat_at__isnull=False).update(
            heartbeat_at=timezone.now()
        )
    )


def change_request_release(*, request_id: int, error: str, retry_at: dt.datetime) -> ChangeRequest | None:
    """Give an attempt up for a later one (a retryable error, or a worker that stopped): the request stays APPLYING,
    without a heartbeat, with ``error`` and the time of the next attempt, audited ``soa.change.released``. None when
    it had ended meanwhile."""
    with transaction.atomic():
        request = ChangeRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or request.state != ChangeState.APPLYING:
            return None
        before = request.audit_snapshot()
        request.heartbeat_at = None
        request.error = f"{error} Trying again at {retry_at:%Y-%m-%d %H:%M:%S} UTC."
        request.save(update_fields=["heartbeat_at", "error", "updated_at"])
        audit_record(actor=None, action="soa.change.released", obj=request, before=before,
                     after={**request.audit_snapshot(), "retry_at": retry_at}, reason=error)  # fmt: skip
    return request


def cloud_values_record(mailbox: Mailbox, values: dict[str, Any], *, at: dt.datetime) -> None:
    """Take ``values`` (Exchange names), as Exchange Online was just read, into the mailbox's picture of the cloud: its
    values, primary address and address rows. The caller holds the mailbox's lock, refreshes its drift, bumps its
    version and saves it, in its transaction."""
    mailbox.exo_values = {**mailbox.exo_values, **values}
    mailbox.exo_read_at = at
    primary = mailbox.exo_values.get("WindowsEmailAddress")
    if primary:
        mailbox.primary_smtp = str(primary).lower()
    _addresses(mailbox)


def _addresses(mailbox: Mailbox) -> None:
    """The mailbox's address rows (uniqueness lookups) as its Exchange Online addresses now are."""
    MailboxAddress.objects.filter(mailbox=mailbox).delete()
    rows = {}
    for raw in mailbox.exo_values.get("EmailAddresses") or []:
        prefix, address, primary = split_proxy(raw)
        rows[(prefix, address)] = MailboxAddress(mailbox=mailbox, prefix=prefix, address=address, is_primary=primary)
    MailboxAddress.objects.bulk_create(rows.values())


def change_request_finish(
    *, request_id: int, route: str, results: dict[str, Any], side: str, values: dict[str, Any]
) -> ChangeRequest:
    """APPLYING -> APPLIED with ``results`` (per system) and the ``route`` taken, audited ``soa.change.applied``.

    ``values`` are the written side's values as read back (Exchange names; ``side`` EXCHANGE or DIRECTORY); they
    update the mailbox (its addresses too, for Exchange), its drift and its version, and the addresses the request
    removed start their cool-down, in the same transaction."""
    now = timezone.now()
    with transaction.atomic():
        request = ChangeRequest.objects.select_for_update().get(pk=request_id)
        _require(request, ChangeState.APPLIED)
        mailbox = Mailbox.objects.select_for_update().get(pk=request.mailbox_id)
        before = request.audit_snapshot()
        if side == EXCHANGE:
            cloud_values_record(mailbox, values, at=now)
        else:
            mailbox.ad_values = {**mailbox.ad_values, **values}
            mailbox.ad_read_at = now
        refresh_drift(mailbox)
        mailbox.version += 1
        mailbox.save()
        request.state, request.route, request.results = ChangeState.APPLIED, route, results
        request.error, request.finished_at, request.heartbeat_at = "", now, None
        request.save(update_fields=["state", "route", "results", "error", "finished_at", "heartbeat_at", "updated_at"])
        removed_addresses_record(request=request, at=now)
        audit_record(actor=None, action="soa.change.applied", obj=request, before=before,
                     after={**request.audit_snapshot(), "mailbox_version": mailbox.version})  # fmt: skip
        jobs.change_batch_poke(request_id=request.pk)
    return request


def change_request_fail(*, request_id: int, error: str, results: dict[str, Any] | None = None) -> ChangeRequest | None:
    """APPLYING -> FAILED with the system's message (and what was learnt, ``results``), audited ``soa.change.failed``.
    Nothing of it is written to the mailbox's values. None when the request had ended meanwhile."""
    with transaction.atomic():
        request = ChangeRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or request.state != ChangeState.APPLYING:
            return None
        _require(request, ChangeState.FAILED)
        before = request.audit_snapshot()
        request.state, request.error = ChangeState.FAILED, error
        request.finished_at, request.heartbeat_at = timezone.now(), None
        if results is not None:
            request.results = results
        request.save(update_fields=["state", "error", "finished_at", "heartbeat_at", "results", "updated_at"])
        audit_record(actor=None, action="soa.change.failed", obj=request, before=before,
                     after=request.audit_snapshot(), reason=error)  # fmt: skip
        jobs.change_batch_poke(request_id=request.pk)
    return request


def change_requests_stale(*, heartbeat_before: dt.datetime, released_before: dt.datetime) -> list[int]:
    """Requests being applied by a worker that stopped (heartbeat older than ``heartbeat_before``), and released ones
    whose scheduled retry never came (released before ``released_before``): what the sweep gives back or requeues."""
    applying = ChangeRequest.objects.filter(state=ChangeState.APPLYING)
    dead = applying.filter(heartbeat_at__lt=heartbeat_before)
    lost = applying.filter(heartbeat_at__isnull=True, updated_at__lt=released_before)
    return sorted(set(dead.values_list("pk", flat=True)) | set(lost.values_list("pk", flat=True)))


def change_requests_unclaimed(*, before: dt.datetime) -> list[int]:
    """Requests ready to apply that no worker has claimed since ``before``: their apply job may never have reached
    Redis (it was down when the request was made) or was lost with Redis's data, so the sweep queues it again."""
    ready = ChangeRequest.objects.filter(state__in=CHANGE_READY_STATES, updated_at__lt=before)
    return list(ready.order_by("pk").values_list("pk", flat=True))
