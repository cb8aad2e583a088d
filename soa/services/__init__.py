"""Writes of the domain. Each service takes the acting user, runs in one transaction, enforces its rules itself,
records its audit event in that transaction, and refuses with a SoaError whose message says what to do.
"""

import datetime as dt
from collections.abc import Iterable

from portal.limits import REASON_MAX_LENGTH, too_long
from portal.models import User
from portal.roles import Action, may
from soa.choices import MEMBER_TRANSITIONS, WAVE_TRANSITIONS, MemberState, WaveState, wave_states_leading_to
from soa.models import PilotWave


class SoaError(Exception):
    """A domain request refused, with a message the person can act on.

    ``kind`` is the Refusal kind when the refusal came from a ``*_refusal`` function (through ``refuse``), so a page
    can answer 403 (role, rule) or 409 (state); "" for a request whose input itself is wrong.
    """

    def __init__(self, message: str = "", kind: str = ""):
        super().__init__(message)
        self.kind = kind


# How a refusal names the action that is missing (the Action's own label reads "wave build").
_DOING = {
    Action.WAVE_VIEW: "reading pilot waves",
    Action.WAVE_BUILD: "building pilot waves",
    Action.WAVE_RUN: "running pilot waves",
    Action.WAVE_APPROVE: "approving pilot waves",
    Action.PORTAL_CONFIGURE: "configuring the portal",
}


class Refusal(str):
    """Why an action is refused: the message the person reads, and its ``kind``.

    ``ROLE``: the actor's roles do not grant it; ``STATE``: the wave is not in a state where it applies; ``ACTOR``:
    it applies, but not to this actor (a member outside their scope, four-eyes, a decision already given); ``RULE``:
    it applies, but a rule of the action stops it now (schedule window, no members, an open rollback...). Pages hide
    actions refused for role or state and show the reason of the others; a refused request answers 403 for ROLE and
    ACTOR, 409 for STATE and RULE. It is a str so that callers needing only the
    message (and every ``*_refusal`` caller written before kinds existed) use it as one.
    """

    ROLE = "role"
    STATE = "state"
    ACTOR = "actor"
    RULE = "rule"

    kind: str

    def __new__(cls, message: str, kind: str = RULE) -> "Refusal":
        refusal = super().__new__(cls, message)
        refusal.kind = kind
        return refusal


def refuse(refusal: str | None) -> None:
    """Raise ``refusal`` as a SoaError when there is one: how a service obeys its own ``*_refusal`` function."""
    if refusal:
        raise SoaError(str(refusal), getattr(refusal, "kind", Refusal.RULE))


def action_refusal(actor: User | None, action: Action) -> Refusal | None:
    """Why the actor may not perform ``action`` anywhere (no role grants it), or None."""
    if may(actor, action):
        return None
    return Refusal(f"Your roles do not allow {_DOING.get(action, action.label)}.", Refusal.ROLE)


def require_action(actor: User | None, action: Action) -> None:
    """Refuse unless one of the actor's roles grants ``action`` somewhere."""
    refuse(action_refusal(actor, action))


def transition_refusal(wave: PilotWave, target: str, verb: str) -> Refusal | None:
    """Why the transition table does not allow moving ``wave`` to ``target``, naming the states it allows it from."""
    if target in WAVE_TRANSITIONS[wave.state]:
        return None
    sources = [WaveState(state).label.lower() for state in wave_states_leading_to(target)]
    return Refusal(
        f"Wave “{wave.name}” is {wave.get_state_display().lower()}; only {_or(sources)} waves can be {verb}.",
        Refusal.STATE,
    )


def require_transition(wave: PilotWave, target: str, verb: str) -> None:
    """Refuse a move the transition table does not allow, naming the states from which it is allowed."""
    refuse(transition_refusal(wave, target, verb))


def member_transition_refusal(current: str, target: str) -> Refusal | None:
    """Why soa.choices.MEMBER_TRANSITIONS does not allow a wave member to move from ``current`` to ``target``."""
    if target in MEMBER_TRANSITIONS[current]:
        return None
    allowed = ", ".join(MemberState(state).label.lower() for state in sorted(MEMBER_TRANSITIONS[current])) or "none"
    return Refusal(
        f"A {MemberState(current).label.lower()} wave member cannot become {MemberState(target).label.lower()} "
        f"(allowed from there: {allowed}).",
        Refusal.STATE,
    )


def require_member_transition(current: str, target: str) -> None:
    """Refuse a member move the transition table does not allow. Every writer of a member's state calls it, the
    runner's claim, record, release and sweep included, so a move the table forbids fails loudly instead of
    silently rewriting the member's history."""
    refuse(member_transition_refusal(current, target))


def locked_wave(wave_id: int) -> PilotWave:
    """The wave's row, locked until the transaction ends (callers are inside transaction.atomic)."""
    wave = PilotWave.objects.select_for_update().filter(pk=wave_id).first()
    if wave is None:
        raise SoaError(f"There is no pilot wave #{wave_id}.")
    return wave


def skip_pending_members(wave: PilotWave, why: str, now: dt.datetime) -> int:
    """Mark the wave's members that never started as SKIPPED (the wave ended before their turn)."""
    require_member_transition(MemberState.PENDING, MemberState.SKIPPED)
    return wave.members.filter(state=MemberState.PENDING).update(
        state=MemberState.SKIPPED, last_error=why, finished_at=now
    )


def clean_text(value: str | None, what: str = "The reason", limit: int = REASON_MAX_LENGTH) -> str:
    """``value`` stripped of surrounding space; a SoaError naming ``what`` when it is longer than ``limit``."""
    text = (value or "").strip()
    problem = too_long(text, limit, what)
    if problem:
        raise SoaError(problem)
    return text


def listing(items: Iterable[object], limit: int = 20) -> str:
    """``a, b, c`` with at most ``limit`` items named and the rest counted."""
    items = [str(item) for item in items]
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
