"""Help-desk change requests on the job lifecycle: one edit applied to the side that holds the mailbox's authority.

The run row is soa.models.ChangeRequest; its moves are soa.services.change_apply's services (claim, heartbeat,
release, finish, fail), each audited. The whole job runs under the request's correlation id, so the audit log shows
the request, its Exchange write and its AD write (the writeback task it requests inherits the id) under one id.

Routing follows the authority **when the edit is applied**, not when it was asked for: a wave may have flipped the
mailbox since. Exchange Online's ``IsExchangeCloudManaged`` (one Get-Mailbox) decides; a mailbox Exchange does not
know is routed by the portal's record.

- Cloud-managed (``EXO_THEN_AD``): one Set-Mailbox with ``EmailAddresses`` as ``{"Add", "Remove"}`` computed from
  the request's ``before`` -> ``desired`` (never a whole list), ``WindowsEmailAddress`` for a new primary,
  ``CustomAttributeN``, ``ExtensionCustomAttributeN`` as Add/Remove and ``HiddenFromAddressListsEnabled``; verified by
  re-reading. What the mailbox already holds is not sent again (a retried attempt reads first). The mailbox's
  Exchange values come from the re-read, and a writeback task is requested for the attributes this installation
  writes back (writeback.tasks.writeback_task_request): its job writes AD within a second.
- AD-managed (``AD_ONLY``): the same edit written into the AD user with the directory client's minimal modify and
  read-back (``DirectoryClient.write``), computed against AD's values as read, ``mail`` kept equal to the primary SMTP
  address, and a custom primary address taking the recipient out of its email address policy (exchange-facts §9).
  Entra Connect carries it to Exchange Online on its next cycle.

Errors: Exchange's or AD's refusal fails the request with that system's message (nothing written to the other side);
a retryable one (throttling, 5xx, AD busy or down) releases it for a later attempt (CHANGE_RETRY), scheduled, never
slept through in the worker. The sweep gives back requests whose worker died (``change_request_sweep``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from soa import jobs
from soa.attributes import BY_EXO
from soa.choices import ROUTE_BY_AUTHORITY, Authority, ChangeRoute
from soa.models import ChangeRequest, Mailbox
from soa.services import SoaError
from soa.services.change_apply import (
    DIRECTORY,
    EXCHANGE,
    change_request_claim,
    change_request_fail,
    change_request_finish,
    change_request_heartbeat,
    change_request_release,
    change_requests_stale,
    change_requests_unclaimed,
)
from soa.values import exo_values, split_proxy
from writeback.directory import DirectoryError
from writeback.exchange import ExchangeOnlineError, ExoNotFound, ExoRetryLater
from writeback.exchange.verify import AddressChangeRefused, state_matches
from writeback.jobs.clients import directory_client, exchange_client
from writeback.jobs.lifecycle import CHANGE_RETRY, RunAbandoned, Work, perform
from writeback.jobs.waiting import waiting_keys
from writeback.tasks import WritebackError, writeback_task_request
from writeback.writeback_plan import ad_side

logger = logging.getLogger(__name__)

# Email address policy "not applied" (EmailAddressPolicyEnabled false), as Exchange's tools stamp it (facts §9).
POLICY_EXCLUDED = "{26491cfc-9e50-4857-861b-0cb8df22b5d7}"
EMAIL_ADDRESSES = "EmailAddresses"
PRIMARY = "WindowsEmailAddress"
# An attempt RUNNING without a heartbeat this long belongs to a dead worker: a few Exchange calls and one LDAP write,
# each bounded by its client's timeouts and retries.
STALE_AFTER = dt.timedelta(minutes=5)
ENTRA_CONNECT_NOTE = "Entra Connect carries the change to Exchange Online on its next sync cycle."


class ChangeApplyError(Exception):
    """An edit that cannot be applied as asked (the mailbox is gone from the side that holds it); permanent."""


class NotFoundYet(ExoNotFound):
    """Exchange answered 404 for a mailbox the portal knows to be there: most often replication lag after a recent
    write (exchange-facts §4.3, to be asked again), so the attempt is retried on CHANGE_RETRY's schedule, and the
    request fails only when the policy gives up (then the mailbox was more likely deleted: an import will say)."""

    retryable = True


@dataclass
class Claimed:
    """A claimed request and what its attempt has learnt so far (for the results of a failure)."""

    request: ChangeRequest
    results: dict[str, Any] = field(default_factory=dict)
    retry_at: dt.datetime | None = None  # Exchange asked to be called again no earlier than this (Retry-After)


@dataclass
class Applied:
    """What an attempt wrote: the route taken, per-system results, and the written side's values read back."""

    route: str
    side: str
    values: dict[str, Any]
    results: dict[str, Any]
    writeback: dict[str, Any] | None = None  # the cloud values to write into AD (Exchange route), by Exchange name


# -- what to send ------------------------------------------------------------------------------------------------------


def _key(raw: str) -> tuple[str, str]:
    kind, address, _primary = split_proxy(raw)
    return kind, address


def address_delta(before: list[str], desired: list[str]) -> tuple[list[str], list[str]]:
    """The addresses ``desired`` adds and removes compared with ``before``, by type and address (a change of primary
    alone is no add or remove: WindowsEmailAddress does it)."""
    had = {_key(raw): raw for raw in before}
    want = {_key(raw): raw for raw in desired}
    added = [_secondary(raw) for key, raw in want.items() if key not in had]
    removed = [raw for key, raw in had.items() if key not in want]
    return added, removed


def _secondary(raw: str) -> str:
    kind, address, _primary = split_proxy(raw)
    return f"smtp:{address}" if kind == "smtp" else raw


def _values_delta(before: Any, desired: Any) -> tuple[list[str], list[str]]:
    had = {str(v).casefold(): str(v) for v in before or []}
    want = {str(v).casefold(): str(v) for v in desired or []}
    return [v for k, v in want.items() if k not in had], [v for k, v in had.items() if k not in want]


def exchange_parameters(before: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """Set-Mailbox's parameters for the request's change: deltas for multi-valued attributes, values for the rest."""
    params: dict[str, Any] = {}
    new_primary = desired.get(PRIMARY) if PRIMARY in desired else None
    if EMAIL_ADDRESSES in desired:
        added, removed = address_delta(list(before.get(EMAIL_ADDRESSES) or []), list(desired[EMAIL_ADDRESSES]))
        if new_primary:
            added = [raw for raw in added if _key(raw) != ("smtp", new_primary.lower())]
        change = {key: values for key, values in (("Add", added), ("Remove", removed)) if values}
        if change:
            params[EMAIL_ADDRESSES] = change
    if new_primary:
        params[PRIMARY] = new_primary
    for name, value in desired.items():
        if name.startswith("CustomAttribute"):
            params[name] = value or ""
        elif name.startswith("ExtensionCustomAttribute"):
            added, removed = _values_delta(before.get(name), value)
            params[name] = {key: values for key, values in (("Add", added), ("Remove", removed)) if values}
        elif name == "HiddenFromAddressListsEnabled":
            params[name] = bool(value)
    return params


def directory_values(before: dict[str, Any], desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    """LDAP name -> value the AD user must hold for the request's change, from AD's entry as read (``observed``): the
    same deltas applied to what AD holds, ``mail`` equal to the primary SMTP address, and a new primary address taking
    the recipient out of its email address policy."""
    wanted: dict[str, Any] = {}
    new_primary = desired.get(PRIMARY) if PRIMARY in desired else None
    if EMAIL_ADDRESSES in desired or new_primary:
        had, want = list(before.get(EMAIL_ADDRESSES) or []), list(desired.get(EMAIL_ADDRESSES) or [])
        added, removed = address_delta(had, want)
        gone = {_key(raw) for raw in removed}
        proxies = [raw for raw in observed.get("proxyAddresses") or [] if _key(raw) not in gone]
        present = {_key(raw) for raw in proxies}
        proxies += [raw for raw in added if _key(raw) not in present]
        if new_primary:
            target = ("smtp", new_primary.lower())
            proxies = [_secondary(raw) for raw in proxies if _key(raw) != target]
            proxies.insert(0, f"SMTP:{new_primary}")
            excluded = list(observed.get("msExchPoliciesExcluded") or [])
            if POLICY_EXCLUDED.casefold() not in {value.casefold() for value in excluded}:
                excluded.append(POLICY_EXCLUDED)
            wanted["msExchPoliciesExcluded"] = excluded
        wanted["proxyAddresses"] = proxies
        primary = next((raw.partition(":")[2] for raw in proxies if raw.startswith("SMTP:")), None)
        if primary:
            wanted["mail"] = primary
    for name, value in desired.items():
        attribute = BY_EXO[name]
        if name.startswith("CustomAttribute"):
            wanted[attribute.ad] = value or None
        elif name.startswith("ExtensionCustomAttribute"):
            added, removed = _values_delta(before.get(name), value)
            gone = {v.casefold() for v in removed}
            values = [v for v in observed.get(attribute.ad) or [] if v.casefold() not in gone]
            have = {v.casefold() for v in values}
            wanted[attribute.ad] = values + [v for v in added if v.casefold() not in have]
        elif name == "HiddenFromAddressListsEnabled":
            wanted[attribute.ad] = bool(value)
    return wanted


# -- the steps ---------------------------------------------------------------------------------------------------------


def claim(request_id: int) -> Claimed | None:
    """A ready request (or one released for a retry) taken for this attempt; None: nothing to do here."""
    request = change_request_claim(request_id=request_id)
    return Claimed(request=request) if request is not None else None


def _beat(request_id: int) -> None:
    # Before each write: an attempt the sweep has taken from this worker must not write.
    if not change_request_heartbeat(request_id=request_id):
        raise RunAbandoned(f"Change request #{request_id} is no longer being applied here (released by the sweep?).")


def _authority_now(mailbox: Mailbox) -> tuple[str, dict[str, Any] | None]:
    """Who holds the mailbox's Exchange attributes now, by Exchange's flag (and the mailbox as read), or by the
    portal's record when Exchange does not know it."""
    if mailbox.exo_object_id is None or not mailbox.in_exo:
        return mailbox.authority, None
    current = exchange_client().get_mailbox(str(mailbox.exo_object_id))
    return (Authority.CLOUD if current.get("IsExchangeCloudManaged") else Authority.ON_PREM), current


def _run(claimed: Claimed) -> Applied:
    """Route by the authority now and write that side; no transaction is open here."""
    request = claimed.request
    mailbox = Mailbox.objects.get(pk=request.mailbox_id)
    _beat(request.pk)
    try:
        return _route_and_apply(claimed, mailbox)
    except ExoRetryLater as error:
        claimed.retry_at = error.retry_at  # an earlier retry would only earn another refusal (exchange-facts §4.5)
        raise
    except ExoNotFound as error:
        raise NotFoundYet(
            f"Exchange Online answered 404 for the mailbox, often replication lag after a recent change; it is asked "
            f"again later. {error}", status=404, request_id=error.request_id,
        ) from error  # fmt: skip


def _route_and_apply(claimed: Claimed, mailbox: Mailbox) -> Applied:
    request = claimed.request
    authority, current = _authority_now(mailbox)
    route = ROUTE_BY_AUTHORITY[authority]
    claimed.results = {"route": route, "requested_route": request.route, "authority": authority}
    if route != request.route:
        claimed.results["note"] = (
            f"The mailbox's authority changed since the request was made; it was written to "
            f"{'Exchange Online' if route == ChangeRoute.EXO_THEN_AD else 'Active Directory'}, which holds it now."
        )
    if route == ChangeRoute.EXO_THEN_AD:
        return _apply_in_exchange(claimed, mailbox, current)
    return _apply_in_directory(claimed, mailbox)


def _apply_in_exchange(claimed: Claimed, mailbox: Mailbox, current: dict[str, Any] | None) -> Applied:
    request = claimed.request
    if current is None:
        raise ChangeApplyError(f"{mailbox} is not in Exchange Online as far as the portal knows; import the inventory.")
    identity = str(mailbox.exo_object_id)
    params = exchange_parameters(request.before, request.desired)
    # A retried attempt may find part of the edit there already: only what the mailbox does not hold is sent.
    pending = {name: value for name, value in params.items() if not state_matches(current, {name: value})}
    exchange: dict[str, Any] = {"written": bool(pending), "parameters": pending}
    claimed.results["exchange"] = exchange
    if pending:
        _beat(request.pk)
        result = exchange_client().set_mailbox(identity, verify=True, **pending)
        exchange["warnings"] = result.warnings
        current = result.mailbox or current
    else:
        exchange["note"] = "Exchange Online already held these values; nothing was sent."
    values = exo_values(current)
    changed = sorted({*request.desired, *((EMAIL_ADDRESSES, PRIMARY) if EMAIL_ADDRESSES in request.desired else ())})
    exchange["read_back"] = {name: values.get(name) for name in changed}
    written_back = [name for name in changed if BY_EXO[name].written_back]
    directory: dict[str, Any] = {"attributes": written_back}
    not_written = [name for name in changed if name not in written_back]
    if not_written:
        directory["not_written_back"] = not_written
    writeback = {name: values.get(name) for name in written_back} if written_back else None
    if writeback is not None and mailbox.ad_guid is None:
        directory["note"] = "The mailbox has no AD user the portal knows of; nothing is written back."
        writeback = None
    claimed.results["directory"] = directory
    return Applied(
        route=ChangeRoute.EXO_THEN_AD, side=EXCHANGE, values=values, results=claimed.results, writeback=writeback
    )


def _apply_in_directory(claimed: Claimed, mailbox: Mailbox) -> Applied:
    request = claimed.request
    if mailbox.ad_guid is None:
        raise ChangeApplyError(f"{mailbox} has no AD user the portal knows of; import the inventory first.")

    def wanted(observed: dict[str, Any]) -> dict[str, Any]:
        _beat(request.pk)  # after each read, before any modify
        return directory_values(request.before, request.desired, observed)

    written = directory_client().write(mailbox.ad_guid, wanted)
    applied = {name: [[op, list(values)] for op, values in ops] for name, ops in written.changes.items()}
    planned = directory_values(request.before, request.desired, written.read_back)
    claimed.results["directory"] = {
        "dn": written.dn,
        "written": bool(written.changes),
        "applied": applied,
        "read_back": {name: written.read_back.get(name) for name in planned},
    }
    claimed.results["exchange"] = {"written": False, "note": ENTRA_CONNECT_NOTE}
    return Applied(route=ChangeRoute.AD_ONLY, side=DIRECTORY, values=ad_side(written.read_back),
                   results=claimed.results)  # fmt: skip


def _finish(claimed: Claimed, applied: Applied) -> ChangeRequest:
    """APPLIED with its results and the mailbox updated; for the Exchange route, the AD writeback requested in the same
    transaction (its job is queued after the commit)."""
    request_id = claimed.request.pk
    with transaction.atomic():
        if applied.writeback is not None:
            task = writeback_task_request(
                mailbox_id=claimed.request.mailbox_id, desired=applied.writeback, source=f"change_request:{request_id}"
            )
            applied.results["directory"]["writeback_task"] = task.pk
        return change_request_finish(request_id=request_id, route=applied.route, results=applied.results,
                                     side=applied.side, values=applied.values)  # fmt: skip


def _fail(claimed: Claimed, error: str) -> ChangeRequest | None:
    return change_request_fail(request_id=claimed.request.pk, error=error, results=claimed.results or None)


def give_back(
    request_id: int, attempts: int, error: str, *, not_before: dt.datetime | None = None
) -> ChangeRequest | None:
    """Release an attempt for a later one, scheduled after CHANGE_RETRY's backoff, or at ``not_before`` (the time
    Exchange asked for) when that is later; FAILED once the policy gives up."""
    if CHANGE_RETRY.gives_up(attempts):
        return change_request_fail(request_id=request_id, error=f"Gave up after {attempts} attempts. {error}")
    retry_at = timezone.now() + dt.timedelta(seconds=CHANGE_RETRY.delay(attempts))
    if not_before is not None and not_before > retry_at:
        retry_at = not_before
    row = change_request_release(request_id=request_id, error=error, retry_at=retry_at)
    if row is not None:
        jobs.enqueue(jobs.CHANGE_APPLY_JOB, request_id, at=retry_at)
    return row


def _release(claimed: Claimed, error: str) -> ChangeRequest | None:
    return give_back(claimed.request.pk, claimed.request.attempts, error, not_before=claimed.retry_at)


CHANGE = Work(
    name="Change request",
    claim=claim,
    run=_run,
    finish=_finish,
    fail=_fail,
    expected=(ExchangeOnlineError, DirectoryError, AddressChangeRefused, WritebackError, ChangeApplyError, SoaError),
    release=_release,
)


def change_request_apply_job(request_id: int) -> str | None:
    """RQ entrypoint: apply one ready change request to the side holding the mailbox's authority. Safe to deliver
    twice (the second delivery finds it claimed or ended) and to run again (it reads before it writes). Returns the
    state it left the request in, or None when there was nothing to claim."""
    correlation = ChangeRequest.objects.filter(pk=request_id).values_list("correlation_id", flat=True).first()
    row = perform(CHANGE, request_id, correlation=correlation or f"change-{request_id}")
    return row.state if row is not None else None


def change_request_sweep() -> list[int]:
    """Give back requests whose worker died mid-attempt (no heartbeat for STALE_AFTER), and queue again released ones
    whose scheduled retry was lost. Returns the ids given back."""
    now = timezone.now()
    released_before = now - dt.timedelta(seconds=(CHANGE_RETRY.max_backoff or CHANGE_RETRY.backoff)) - STALE_AFTER
    swept = []
    for request_id in change_requests_stale(heartbeat_before=now - STALE_AFTER, released_before=released_before):
        request = ChangeRequest.objects.filter(pk=request_id).only("attempts", "heartbeat_at").first()
        if request is None:
            continue
        if request.heartbeat_at is None:
            jobs.enqueue(jobs.CHANGE_APPLY_JOB, request_id)
            continue
        error = f"Its worker stopped: no heartbeat since {request.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC."
        if give_back(request_id, request.attempts, error) is not None:
            swept.append(request_id)
    _queue_unclaimed(now - STALE_AFTER)
    if swept:
        logger.warning("Change request sweep gave back request(s) %s whose heartbeat had stopped.", swept)
    return swept


def _queue_unclaimed(before: dt.datetime) -> None:
    """Queue the apply job of ready requests unclaimed since ``before`` whose job is not waiting in Redis (it never
    got there, or Redis lost it). One queued twice is harmless: the second delivery finds the request claimed."""
    if not settings.CHANGE_APPLY_ENABLED:
        return  # ready requests wait on purpose, and nothing would be queued
    unclaimed = change_requests_unclaimed(before=before)
    if not unclaimed:
        return
    waiting = waiting_keys(jobs.CHANGE_APPLY_JOB, queue_name=jobs.QUEUE)
    lost = [request_id for request_id in unclaimed if request_id not in waiting]
    for request_id in lost:
        jobs.change_request_enqueue(request_id=request_id)
    if lost:
        logger.warning("Change request sweep queued again ready request(s) %s whose apply job was lost.", lost)
