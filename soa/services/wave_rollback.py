"""Rolling a finished wave back: a new draft wave, in the other direction, of the members the wave moved.

The rollback is an ordinary wave from then on: it is pre-flighted, submitted, approved by someone else and run
like any other, and a rollback of a move to the cloud writes every Exchange attribute's cloud value into AD
before each flag goes back (writeback.wave_revert), so nothing edited in the cloud meanwhile is lost.
"""

from django.db import transaction

from portal.audit import audit_record
from portal.models import User
from portal.roles import Action
from soa.choices import WAVE_OPEN_STATES, MemberState, WaveDirection, WaveState
from soa.models import PilotWave
from soa.services import Refusal, action_refusal, listing, locked_wave, refuse, require_action
from soa.services.wave_members import add_members, in_build_scope
from soa.services.waves import wave_create

ROLLBACK_SOURCE_STATES = frozenset({WaveState.COMPLETED, WaveState.COMPLETED_WITH_ERRORS})
OPPOSITE = {WaveDirection.TO_CLOUD: WaveDirection.TO_ON_PREM, WaveDirection.TO_ON_PREM: WaveDirection.TO_CLOUD}
_NAME_LIMIT = PilotWave._meta.get_field("name").max_length


def _rollback_name(source: PilotWave) -> str:
    """“Rollback of <name>”, numbered when an open wave already has that name (a rejected rollback, say)."""
    base = f"Rollback of {source.name}"[: _NAME_LIMIT - 6]
    name, number = base, 1
    while PilotWave.objects.filter(name__iexact=name, state__in=WAVE_OPEN_STATES).exists():
        number += 1
        name = f"{base} ({number})"
    return name


def _moved(source: PilotWave) -> dict[int, str]:
    """The mailboxes the wave moved (its DONE members): id -> UPN."""
    return dict(source.members.filter(state=MemberState.DONE).values_list("mailbox_id", "mailbox__upn"))


def rollback_refusal(actor: User, source: PilotWave) -> Refusal | None:
    """Why ``actor`` may not create a rollback of ``source`` now, or None.

    Refused unless the wave finished, moved at least one mailbox, has no open rollback already, and every
    mailbox it moved lies in the actor's wave-building scope (a partial rollback would be a surprise).
    """
    refusal = action_refusal(actor, Action.WAVE_BUILD)
    if refusal:
        return refusal
    if source.state not in ROLLBACK_SOURCE_STATES:
        return Refusal(
            f"Wave “{source.name}” is {source.get_state_display().lower()}; only a completed wave can be rolled back.",
            Refusal.STATE,
        )
    open_rollback = source.rollbacks.filter(state__in=WAVE_OPEN_STATES).first()
    if open_rollback is not None:
        return Refusal(
            f"Wave “{source.name}” already has an open rollback, “{open_rollback.name}” "
            f"({open_rollback.get_state_display().lower()}); finish or cancel it first."
        )
    moved = _moved(source)
    if not moved:
        return Refusal(f"Wave “{source.name}” moved no mailbox, so there is nothing to roll back.")
    outside = sorted(upn for pk, upn in moved.items() if pk not in in_build_scope(actor, moved))
    if outside:
        return Refusal(
            f"You cannot roll back wave “{source.name}”: these mailboxes it moved are outside your wave-building "
            f"scope: {listing(outside)}.",
            Refusal.ACTOR,
        )
    return None


@transaction.atomic
def wave_rollback_create(*, actor: User, wave_id: int) -> PilotWave:
    """A draft wave moving the finished wave's DONE members back, with the same approval policy and throttle
    (refused as rollback_refusal says)."""
    require_action(actor, Action.WAVE_BUILD)
    source = locked_wave(wave_id)
    refuse(rollback_refusal(actor, source))
    moved = _moved(source)
    wave = wave_create(
        actor=actor,
        name=_rollback_name(source),
        direction=OPPOSITE[source.direction],
        description=f"Rollback of wave #{source.pk} “{source.name}”.",
        required_approvals=source.required_approvals,
        batch_size=source.batch_size,
        max_rate=source.max_rate,
        rollback_of=source,
    )
    add_members(actor, wave, sorted(moved), {"how": "rollback", "rollback_of": source.pk, "count": len(moved)})
    audit_record(
        actor=actor, action="soa.wave.rollback_created", obj=source, before=None,
        after={"rollback_wave": wave.pk, "name": wave.name, "direction": wave.direction, "members": len(moved)},
    )  # fmt: skip
    wave.refresh_from_db()
    return wave
