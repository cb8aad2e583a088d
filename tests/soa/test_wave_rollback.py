"""Creating a rollback wave from a finished one: what it holds, and every refusal."""

import pytest

from soa.choices import Authority, MemberState, WaveDirection, WaveState
from soa.models import PilotWave
from soa.services import SoaError
from soa.services.wave_rollback import wave_rollback_create
from soa.services.waves import wave_cancel, wave_submit
from tests.soa.test_wave_support import FINANCE, cast, last_event, make_mailbox, new_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def finished_wave(people, states: dict[str, str], *, ou_of=None, state=WaveState.COMPLETED, **options) -> PilotWave:
    """A wave to the cloud that ran: one member per name, left in the given member state."""
    mailboxes = {
        name: make_mailbox(name, **({"ou": ou_of[name]} if ou_of and name in ou_of else {})) for name in states
    }
    wave = new_wave(people["op"], *mailboxes.values(), **options)
    PilotWave.objects.filter(pk=wave.pk).update(state=state)
    for name, member_state in states.items():
        wave.members.filter(mailbox=mailboxes[name]).update(state=member_state)
        if member_state == MemberState.DONE:
            type(mailboxes[name]).objects.filter(pk=mailboxes[name].pk).update(authority=Authority.CLOUD)
    wave.refresh_from_db()
    return wave


def test_a_rollback_is_a_draft_in_the_other_direction_holding_what_the_wave_moved(people):
    source = finished_wave(
        people, {"Ann": MemberState.DONE, "Bob": MemberState.DONE, "Cy": MemberState.FAILED},
        state=WaveState.COMPLETED_WITH_ERRORS, required_approvals=2, batch_size=7, max_rate=3.0,
    )  # fmt: skip
    rollback = wave_rollback_create(actor=people["op2"], wave_id=source.pk)
    assert rollback.state == WaveState.DRAFT and rollback.direction == WaveDirection.TO_ON_PREM
    assert rollback.rollback_of_id == source.pk and rollback.name == "Rollback of Pilot 1"
    assert (rollback.required_approvals, rollback.batch_size, rollback.max_rate) == (2, 7, 3.0)
    assert sorted(rollback.members.values_list("mailbox__display_name", flat=True)) == ["Ann", "Bob"]
    assert rollback.created_by == people["op2"]
    assert last_event("soa.wave.created", rollback).after["rollback_of"] == source.pk
    assert last_event("soa.wave.rollback_created", source).after == {
        "rollback_wave": rollback.pk, "name": rollback.name, "direction": "TO_ON_PREM", "members": 2,
    }  # fmt: skip
    # From here on it is an ordinary wave: pre-flight finds the members movable back to AD.
    submitted = wave_submit(actor=people["op2"], wave_id=rollback.pk)
    assert submitted.state == WaveState.SUBMITTED and not submitted.members.filter(excluded=True).exists()


def test_one_open_rollback_at_a_time_and_a_cancelled_one_frees_the_name(people):
    source = finished_wave(people, {"Ann": MemberState.DONE})
    first = wave_rollback_create(actor=people["op"], wave_id=source.pk)
    with pytest.raises(SoaError, match="already has an open rollback, “Rollback of Pilot 1” \\(draft\\)"):
        wave_rollback_create(actor=people["op"], wave_id=source.pk)
    wave_cancel(actor=people["op"], wave_id=first.pk, reason="wrong day")
    second = wave_rollback_create(actor=people["op"], wave_id=source.pk)
    assert second.name == "Rollback of Pilot 1"
    new_wave(people["op"], name="Rollback of Pilot 1 again")  # another open wave's name does not clash
    wave_cancel(actor=people["op"], wave_id=second.pk, reason="again")
    new_wave(people["op"], name="Rollback of Pilot 1")
    assert wave_rollback_create(actor=people["op"], wave_id=source.pk).name == "Rollback of Pilot 1 (2)"


@pytest.mark.parametrize("state", [WaveState.DRAFT, WaveState.SUBMITTED, WaveState.RUNNING, WaveState.CANCELLED])
def test_only_a_completed_wave_can_be_rolled_back(people, state):
    source = finished_wave(people, {"Ann": MemberState.DONE}, state=state)
    with pytest.raises(SoaError, match="only a completed wave can be rolled back"):
        wave_rollback_create(actor=people["op"], wave_id=source.pk)


def test_a_wave_that_moved_nothing_has_nothing_to_roll_back(people):
    source = finished_wave(people, {"Ann": MemberState.FAILED}, state=WaveState.COMPLETED_WITH_ERRORS)
    with pytest.raises(SoaError, match="moved no mailbox"):
        wave_rollback_create(actor=people["op"], wave_id=source.pk)


def test_refused_without_the_build_role_or_with_moved_mailboxes_outside_the_scope(people):
    source = finished_wave(people, {"Ann": MemberState.DONE, "Fay": MemberState.DONE}, ou_of={"Fay": FINANCE})
    with pytest.raises(SoaError, match="Your roles do not allow building pilot waves"):
        wave_rollback_create(actor=people["approver"], wave_id=source.pk)
    with pytest.raises(SoaError, match="outside your wave-building scope: fay@corp.example.com"):
        wave_rollback_create(actor=people["sales_op"], wave_id=source.pk)
    assert not PilotWave.objects.filter(rollback_of=source).exists()
    with pytest.raises(SoaError, match="no pilot wave #999"):
        wave_rollback_create(actor=people["op"], wave_id=999)
