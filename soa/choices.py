"""Choice sets of the domain."""

from django.db import models


class Authority(models.TextChoices):
    """Who masters a mailbox's Exchange attributes (IsExchangeCloudManaged false / true)."""

    ON_PREM = "ON_PREM", "Active Directory"
    CLOUD = "CLOUD", "Exchange Online"


class Pairing(models.TextChoices):
    """How the inventory paired a mailbox's AD user with its Exchange Online object (exchange-facts §8)."""

    NONE = "", "Not paired"
    DIRECTORY_ID = "DIRECTORY_ID", "msDS-ExternalDirectoryObjectID"
    GRAPH = "GRAPH", "Entra ID source anchor"
    UPN = "UPN", "UPN match (weak)"
    SMTP = "SMTP", "Primary SMTP match (weak)"


# Pairs made by a name match rather than an identifier: they can pair the wrong two objects.
WEAK_PAIRINGS = frozenset({Pairing.UPN, Pairing.SMTP})


class WaveDirection(models.TextChoices):
    """Where a pilot wave moves its members' Exchange-attribute authority."""

    TO_CLOUD = "TO_CLOUD", "To Exchange Online"
    TO_ON_PREM = "TO_ON_PREM", "Back to Active Directory"


# The authority a member has before the flip and the one it has after, per direction.
SOURCE_AUTHORITY: dict[str, str] = {
    WaveDirection.TO_CLOUD: Authority.ON_PREM,
    WaveDirection.TO_ON_PREM: Authority.CLOUD,
}
TARGET_AUTHORITY: dict[str, str] = {
    WaveDirection.TO_CLOUD: Authority.CLOUD,
    WaveDirection.TO_ON_PREM: Authority.ON_PREM,
}


class WaveState(models.TextChoices):
    """The life of a pilot wave (transitions in WAVE_TRANSITIONS)."""

    DRAFT = "DRAFT", "Draft"
    SUBMITTED = "SUBMITTED", "Submitted"
    APPROVED = "APPROVED", "Approved"
    REJECTED = "REJECTED", "Rejected"
    RUNNING = "RUNNING", "Running"
    PAUSED = "PAUSED", "Paused"
    COMPLETED = "COMPLETED", "Completed"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS", "Completed with errors"
    CANCELLED = "CANCELLED", "Cancelled"


# Every legal move of a wave, in one place: services check against it and build their refusals from it.
#   DRAFT -> SUBMITTED (wave_submit) | CANCELLED (wave_cancel)
#   SUBMITTED -> APPROVED (wave_approve, quorum reached) | REJECTED (wave_reject) | DRAFT (wave_withdraw)
#              | CANCELLED (wave_cancel)
#   APPROVED -> RUNNING (runner) | CANCELLED (wave_cancel)
#   RUNNING -> PAUSED | COMPLETED | COMPLETED_WITH_ERRORS (runner); pause before cancelling, so no flip is cut short
#   PAUSED -> RUNNING (runner) | CANCELLED (wave_cancel)
WAVE_TRANSITIONS: dict[str, frozenset[str]] = {
    WaveState.DRAFT: frozenset({WaveState.SUBMITTED, WaveState.CANCELLED}),
    WaveState.SUBMITTED: frozenset({WaveState.APPROVED, WaveState.REJECTED, WaveState.DRAFT, WaveState.CANCELLED}),
    WaveState.APPROVED: frozenset({WaveState.RUNNING, WaveState.CANCELLED}),
    WaveState.RUNNING: frozenset({WaveState.PAUSED, WaveState.COMPLETED, WaveState.COMPLETED_WITH_ERRORS}),
    WaveState.PAUSED: frozenset({WaveState.RUNNING, WaveState.CANCELLED}),
    WaveState.REJECTED: frozenset(),
    WaveState.COMPLETED: frozenset(),
    WaveState.COMPLETED_WITH_ERRORS: frozenset(),
    WaveState.CANCELLED: frozenset(),
}
WAVE_TERMINAL_STATES: frozenset[str] = frozenset(state for state, moves in WAVE_TRANSITIONS.items() if not moves)
WAVE_OPEN_STATES: frozenset[str] = frozenset(WAVE_TRANSITIONS) - WAVE_TERMINAL_STATES
# Open waves past their draft hold their members: a mailbox belongs to at most one of them (pre-flight IN_OTHER_WAVE).
# Drafts hold nothing, so two operators may sketch overlapping drafts; the second to submit finds the overlap.
WAVE_CLAIMING_STATES: frozenset[str] = WAVE_OPEN_STATES - {WaveState.DRAFT}


def wave_states_leading_to(target: str) -> list[str]:
    """The states from which a wave may move to ``target``, in declaration order."""
    return [state for state in WaveState if target in WAVE_TRANSITIONS[state]]


class MemberState(models.TextChoices):
    """One member's flip: PENDING -> RUNNING -> DONE | FAILED | SKIPPED."""

    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    DONE = "DONE", "Done"
    FAILED = "FAILED", "Failed"
    SKIPPED = "SKIPPED", "Skipped"


# PENDING -> SKIPPED: excluded by pre-flight at submission, or the wave was rejected/cancelled before its turn.
# RUNNING -> PENDING: the runner gives a claimed member back (pause, closed window, transient failure) or the sweep
# takes it from a dead worker; its next claim reads Exchange before writing.
# FAILED -> PENDING: a failed member retried alone (runner). SKIPPED -> PENDING: a withdrawn wave's exclusions undone.
MEMBER_TRANSITIONS: dict[str, frozenset[str]] = {
    MemberState.PENDING: frozenset({MemberState.RUNNING, MemberState.SKIPPED}),
    MemberState.RUNNING: frozenset({MemberState.DONE, MemberState.FAILED, MemberState.SKIPPED, MemberState.PENDING}),
    MemberState.FAILED: frozenset({MemberState.PENDING}),
    MemberState.SKIPPED: frozenset({MemberState.PENDING}),
    MemberState.DONE: frozenset(),
}
MEMBER_OPEN_STATES: frozenset[str] = frozenset({MemberState.PENDING, MemberState.RUNNING})
MEMBER_FINISHED_STATES: frozenset[str] = frozenset({MemberState.DONE, MemberState.FAILED, MemberState.SKIPPED})


class Decision(models.TextChoices):
    """An approver's answer to a submitted wave."""

    APPROVE = "APPROVE", "Approve"
    REJECT = "REJECT", "Reject"


class ChangeOperation(models.TextChoices):
    """One kind of help-desk edit in a change request (soa.validation reads and applies them)."""

    ADD_ALIAS = "add_alias", "Add an address"
    REMOVE_ALIAS = "remove_alias", "Remove an address"
    MAKE_PRIMARY = "make_primary", "Make the primary address"
    SET_CUSTOM_ATTRIBUTE = "set_custom_attribute", "Set a custom attribute"
    CLEAR_CUSTOM_ATTRIBUTE = "clear_custom_attribute", "Clear a custom attribute"
    ADD_EXTENSION_VALUE = "add_extension_value", "Add an extension attribute value"
    REMOVE_EXTENSION_VALUE = "remove_extension_value", "Remove an extension attribute value"
    HIDE_FROM_ADDRESS_LISTS = "hide_from_address_lists", "Hide from address lists"
    SHOW_IN_ADDRESS_LISTS = "show_in_address_lists", "Show in address lists"


class ChangeRoute(models.TextChoices):
    """Which systems a change request writes, from the mailbox's authority: the portal edits the side that holds it."""

    EXO_THEN_AD = "EXO_THEN_AD", "Exchange Online, then Active Directory"
    AD_ONLY = "AD_ONLY", "Active Directory only (Entra Connect carries it to Exchange Online)"


# The route of an edit made now, by the mailbox's authority.
ROUTE_BY_AUTHORITY: dict[str, str] = {
    Authority.CLOUD: ChangeRoute.EXO_THEN_AD,
    Authority.ON_PREM: ChangeRoute.AD_ONLY,
}


class ChangeState(models.TextChoices):
    """The life of a change request (transitions in CHANGE_TRANSITIONS)."""

    PENDING_APPROVAL = "PENDING_APPROVAL", "Waiting for approval"
    APPROVED = "APPROVED", "Approved"
    REJECTED = "REJECTED", "Rejected"
    EXPIRED = "EXPIRED", "Expired"
    VALIDATED = "VALIDATED", "Ready to apply"
    APPLYING = "APPLYING", "Being applied"
    APPLIED = "APPLIED", "Applied"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


# Every legal move of a change request:
#   PENDING_APPROVAL -> APPROVED (change_request_approve) | REJECTED (change_request_reject)
#                     | EXPIRED (its approval window closed; closed by the next edit of the mailbox)
#                     | CANCELLED (change_request_cancel)
#   VALIDATED, APPROVED -> APPLYING (the apply job claims it) | CANCELLED (change_request_cancel)
#   APPLYING -> APPLIED | FAILED (the apply job, with per-system results)
# Once APPLYING, a request is never cancelled: the job may already have written Exchange Online. A retryable error
# leaves it APPLYING without a heartbeat until its next attempt (soa.services.change_apply), which reads first.
CHANGE_TRANSITIONS: dict[str, frozenset[str]] = {
    ChangeState.PENDING_APPROVAL: frozenset(
        {ChangeState.APPROVED, ChangeState.REJECTED, ChangeState.EXPIRED, ChangeState.CANCELLED}
    ),
    ChangeState.VALIDATED: frozenset({ChangeState.APPLYING, ChangeState.CANCELLED}),
    ChangeState.APPROVED: frozenset({ChangeState.APPLYING, ChangeState.CANCELLED}),
    ChangeState.APPLYING: frozenset({ChangeState.APPLIED, ChangeState.FAILED}),
    ChangeState.APPLIED: frozenset(),
    ChangeState.FAILED: frozenset(),
    ChangeState.REJECTED: frozenset(),
    ChangeState.EXPIRED: frozenset(),
    ChangeState.CANCELLED: frozenset(),
}
CHANGE_TERMINAL_STATES: frozenset[str] = frozenset(state for state, moves in CHANGE_TRANSITIONS.items() if not moves)
# An open request holds its mailbox: one at a time per mailbox (a database constraint), and pre-flight blocks the
# mailbox from a wave while one is open.
CHANGE_OPEN_STATES: frozenset[str] = frozenset(CHANGE_TRANSITIONS) - CHANGE_TERMINAL_STATES
# States from which the apply job may start: nothing left to decide.
CHANGE_READY_STATES: frozenset[str] = frozenset({ChangeState.VALIDATED, ChangeState.APPROVED})


class BatchState(models.TextChoices):
    """The life of a bulk edit (a ChangeBatch; transitions in BATCH_TRANSITIONS)."""

    QUEUED = "QUEUED", "Queued"
    RUNNING = "RUNNING", "Running"
    PAUSED = "PAUSED", "Paused"
    DONE = "DONE", "Done"
    CANCELLED = "CANCELLED", "Cancelled"


# Every legal move of a bulk edit:
#   QUEUED -> RUNNING (its job's first step) | PAUSED | CANCELLED (its owner or an admin)
#   RUNNING -> PAUSED (its owner or an admin, or an unexpected error in a step) | DONE (every line ended) | CANCELLED
#   PAUSED -> RUNNING (resumed) | CANCELLED
# A paused or cancelled batch creates no new change request; the requests it already made go their own way.
BATCH_TRANSITIONS: dict[str, frozenset[str]] = {
    BatchState.QUEUED: frozenset({BatchState.RUNNING, BatchState.PAUSED, BatchState.CANCELLED}),
    BatchState.RUNNING: frozenset({BatchState.PAUSED, BatchState.DONE, BatchState.CANCELLED}),
    BatchState.PAUSED: frozenset({BatchState.RUNNING, BatchState.CANCELLED}),
    BatchState.DONE: frozenset(),
    BatchState.CANCELLED: frozenset(),
}
BATCH_OPEN_STATES: frozenset[str] = frozenset(state for state, moves in BATCH_TRANSITIONS.items() if moves)


class TenantDefaultState(models.TextChoices):
    """The life of a request to switch on the tenant default (exchange-facts §1.9); moves in TENANT_DEFAULT_TRANSITIONS.

    PENDING waits for its approvers; QUEUED, RUNNING, DONE and FAILED are the lifecycle of the job that makes the call
    (writeback.jobs.lifecycle), so a FAILED request can be queued again and the job reads before it writes."""

    PENDING = "PENDING", "Awaiting approval"
    QUEUED = "QUEUED", "Queued"
    RUNNING = "RUNNING", "Running"
    DONE = "DONE", "Done"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


TENANT_DEFAULT_TRANSITIONS: dict[str, frozenset[str]] = {
    TenantDefaultState.PENDING: frozenset({TenantDefaultState.QUEUED, TenantDefaultState.CANCELLED}),
    TenantDefaultState.QUEUED: frozenset({TenantDefaultState.RUNNING, TenantDefaultState.FAILED}),
    TenantDefaultState.RUNNING: frozenset({TenantDefaultState.DONE, TenantDefaultState.FAILED}),
    TenantDefaultState.FAILED: frozenset({TenantDefaultState.QUEUED, TenantDefaultState.CANCELLED}),
    TenantDefaultState.DONE: frozenset(),
    TenantDefaultState.CANCELLED: frozenset(),
}
TENANT_DEFAULT_OPEN_STATES = frozenset(
    {TenantDefaultState.PENDING, TenantDefaultState.QUEUED, TenantDefaultState.RUNNING, TenantDefaultState.FAILED}
)
