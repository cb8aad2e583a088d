"""A new draft from an existing wave: the way on after a wave was rejected or cancelled, or to run a finished wave's
plan again. The copy takes the wave's direction, approval policy, throttle and (when it still lies ahead) its
schedule, and the included members that lie inside the actor's wave-building scope; it is a new wave with its own
history, so the original and its decisions stay as they were."""

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.models import AuditEvent, User
from portal.roles import Action
from soa.choices import WAVE_OPEN_STATES, WaveState
from soa.models import PilotWave
from soa.services import SoaError, require_action
from soa.services.wave_members import add_members, in_build_scope
from soa.services.waves import wave_create

# Names tried for the copy before giving up: "<name> (copy)", "<name> (copy 2)", ...
_NAME_TRIES = 20
# A second copy of the same wave asked for by the same person this soon, while the first is still an unchanged
# draft, is the same request sent twice (a double click, two tabs): it returns the first copy.
SAME_REQUEST = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class Cloned:
    wave: PilotWave
    members: int
    left_out: int  # included members of the original outside the actor's scope


def _copy_name(name: str) -> str:
    limit = PilotWave._meta.get_field("name").max_length
    for number in range(1, _NAME_TRIES + 1):
        suffix = " (copy)" if number == 1 else f" (copy {number})"
        candidate = name[: limit - len(suffix)] + suffix
        if not PilotWave.objects.filter(name__iexact=candidate, state__in=WAVE_OPEN_STATES).exists():
            return candidate
    raise SoaError(f"Open waves already hold {_NAME_TRIES} copies of “{name}”; rename one first.")


@transaction.atomic
def wave_clone(*, actor: User, wave_id: int) -> Cloned:
    """A draft copy of wave ``wave_id`` (``soa.wave.cloned`` on the copy, naming the original), with the original's
    included members that lie inside the actor's wave-building scope."""
    require_action(actor, Action.WAVE_BUILD)
    source = PilotWave.objects.filter(pk=wave_id).first()
    if source is None:
        raise SoaError(f"There is no pilot wave #{wave_id}.")
    again = _same_request(actor, source)
    if again is not None:
        return again
    ahead = source.window_end is None or source.window_end > timezone.now()
    copy = wave_create(
        actor=actor, name=_copy_name(source.name), direction=source.direction, description=source.description,
        required_approvals=source.required_approvals, batch_size=source.batch_size, max_rate=source.max_rate,
        window_start=source.window_start if ahead else None, window_end=source.window_end if ahead else None,
    )  # fmt: skip
    wanted = list(source.members.filter(excluded=False).order_by("mailbox_id").values_list("mailbox_id", flat=True))
    inside = sorted(in_build_scope(actor, wanted))
    if inside:
        add_members(actor, copy, inside, {"how": "cloned", "from_wave": source.pk, "count": len(inside)})
    copy.refresh_from_db()
    audit_record(
        actor=actor, action="soa.wave.cloned", obj=copy,
        after={"from_wave": source.pk, "from_state": source.state, "members": len(inside),
               "left_out": len(wanted) - len(inside), "schedule_kept": ahead, "version": copy.version},
    )  # fmt: skip
    return Cloned(wave=copy, members=len(inside), left_out=len(wanted) - len(inside))


def _same_request(actor: User, source: PilotWave) -> Cloned | None:
    """The copy this actor made of ``source`` within SAME_REQUEST, when it is still the draft it was made as."""
    recent = AuditEvent.objects.filter(
        action="soa.wave.cloned", actor=actor, occurred_at__gte=timezone.now() - SAME_REQUEST
    ).order_by("-id")
    for event in recent[:20]:
        after = event.after or {}
        if after.get("from_wave") != source.pk:
            continue
        copy = PilotWave.objects.filter(pk=int(event.object_id), state=WaveState.DRAFT).first()
        if copy is not None and copy.version == after.get("version"):
            return Cloned(wave=copy, members=after.get("members", 0), left_out=after.get("left_out", 0))
    return None
