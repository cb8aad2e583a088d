"""What a user may do to a pilot wave now, and why not: the one answer the wave pages show.

Every entry is decided by the ``*_refusal`` function its service raises on (soa.services.waves, wave_members,
approvals, wave_run, wave_rollback), so a rule lives in one place and a page never offers what the service would
refuse, nor hides what it would do. Reads only.

What no refusal function can know in advance is left to the service call: a submission still runs pre-flight,
whose blocking findings may refuse it, and a retry checks the one member retried (its state, its scope).
"""

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.utils import timezone

from portal.models import User
from portal.roles import Action
from soa.choices import Decision
from soa.models import PilotWave
from soa.services import Refusal, action_refusal
from soa.services.approvals import approval_refusal
from soa.services.wave_members import members_refusal
from soa.services.wave_rollback import rollback_refusal
from soa.services.wave_run import member_retry_refusal, pause_refusal, resume_refusal, start_refusal
from soa.services.waves import cancel_refusal, preflight_refusal, submit_refusal, update_refusal, withdraw_refusal

# Every action the selector answers for, in the order a wave's life meets them.
WAVE_ACTIONS = (
    "edit_members", "update", "preflight", "submit", "withdraw", "cancel", "approve", "reject", "start", "pause",
    "resume", "retry_member", "rollback", "clone",
)  # fmt: skip


@dataclass(frozen=True)
class Allowed:
    """Whether an action may be taken now; when not, the service's reason and its kind (Refusal.ROLE, STATE, ACTOR
    or RULE). True in a boolean context exactly when allowed, so templates write ``{% if actions.start %}``."""

    allowed: bool
    reason: str = ""
    kind: str = ""

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def shown(self) -> bool:
        """Whether a page should say why the action is refused. Someone whose roles never allow it, or a wave in a
        state where it does not apply, needs no explanation; a rule that stops it now (scope, four-eyes, the
        schedule window, an open rollback...) does."""
        return not self.allowed and self.kind in (Refusal.RULE, Refusal.ACTOR)


def _allowed(refusal: str | None) -> Allowed:
    if not refusal:
        return Allowed(allowed=True)
    return Allowed(allowed=False, reason=str(refusal), kind=getattr(refusal, "kind", Refusal.RULE))


def wave_actions(
    *, user: User, wave: PilotWave, now: dt.datetime | None = None, only: Iterable[str] | None = None
) -> dict[str, Allowed]:
    """For each action on ``wave`` (WAVE_ACTIONS, or those named in ``only``), whether ``user`` may take it now.

    ``only`` spares a polled partial the checks it does not show.
    """
    now = now or timezone.now()
    checks: dict[str, Callable[[], str | None]] = {
        "edit_members": lambda: members_refusal(user, wave),
        "update": lambda: update_refusal(user, wave),
        "preflight": lambda: preflight_refusal(user, wave),
        "submit": lambda: submit_refusal(user, wave),
        "withdraw": lambda: withdraw_refusal(user, wave),
        "cancel": lambda: cancel_refusal(user, wave),
        "approve": lambda: approval_refusal(user, wave, decision=Decision.APPROVE, now=now),
        "reject": lambda: approval_refusal(user, wave, decision=Decision.REJECT, now=now),
        "start": lambda: start_refusal(user, wave, now),
        "pause": lambda: pause_refusal(user, wave),
        "resume": lambda: resume_refusal(user, wave, now),
        "retry_member": lambda: member_retry_refusal(user, wave),
        # Any wave may be copied into a new draft by whoever builds waves (soa.services.wave_clone).
        "clone": lambda: action_refusal(user, Action.WAVE_BUILD),
        "rollback": lambda: rollback_refusal(user, wave),
    }
    return {name: _allowed(checks[name]()) for name in (WAVE_ACTIONS if only is None else only)}
