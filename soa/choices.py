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
