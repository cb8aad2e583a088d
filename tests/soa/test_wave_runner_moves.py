"""The runner's own moves go through services and the transition tables: completing a wave and pausing it when
its schedule window closes (wave_complete, wave_window_pause), and every member move (require_member_transition).
An illegal move raises instead of rewriting the row."""

import datetime as dt
import itertools

import pytest
from django.utils import timezone

from soa.choices import MEMBER_TRANSITIONS, MemberState, WaveState
from soa.models import PilotWave, WaveMember
from soa.services import SoaError, require_member_transition
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_complete, wave_pause, wave_start, wave_window_pause
from tests.soa.test_wave_support import cast, events, last_event, make_mailbox, submitted_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def running_wave(people, *names: str) -> PilotWave:
    """A started wave (its first batch is queued only on commit, which these tests never reach)."""
    wave = submitted_wave(people["op"], *(make_mailbox(name) for name in names or ("Ann Archer", "Bob Baker")))
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    return wave_start(actor=people["op2"], wave_id=wave.pk)


def finish_members(wave: PilotWave, *states: str) -> None:
    for member, state in zip(wave.members.order_by("pk"), states, strict=True):
        WaveMember.objects.filter(pk=member.pk).update(state=state, finished_at=timezone.now())


def test_the_runner_completes_a_wave_whose_members_are_all_done_with_its_audit_event(people):
    wave = running_wave(people)
    finish_members(wave, MemberState.DONE, MemberState.DONE)
    wave = wave_complete(wave_id=wave.pk)
    assert wave.state == WaveState.COMPLETED and wave.finished_at is not None
    event = last_event("soa.wave.completed", wave)
    assert event.actor is None and (event.before["state"], event.after["state"]) == ("RUNNING", "COMPLETED")
    assert event.after["failed"] == 0


def test_a_failed_member_completes_the_wave_with_errors(people):
    wave = running_wave(people)
    finish_members(wave, MemberState.DONE, MemberState.FAILED)
    assert wave_complete(wave_id=wave.pk).state == WaveState.COMPLETED_WITH_ERRORS
    assert "1 member(s) failed" in last_event("soa.wave.completed", wave).reason


def test_completion_is_refused_while_a_member_is_left_and_from_a_state_the_table_forbids(people):
    wave = running_wave(people)
    with pytest.raises(SoaError, match="still has 2 member"):
        wave_complete(wave_id=wave.pk)
    finish_members(wave, MemberState.DONE, MemberState.DONE)
    wave_pause(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="is paused; only running waves can be completed"):
        wave_complete(wave_id=wave.pk)  # PAUSED -> COMPLETED is not in WAVE_TRANSITIONS
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.PAUSED
    assert not events("soa.wave.completed", wave)


def test_the_runner_pauses_a_wave_whose_window_closed_as_the_system_with_the_window_as_reason(people):
    wave = running_wave(people)
    PilotWave.objects.filter(pk=wave.pk).update(window_end=timezone.now() - dt.timedelta(seconds=1))
    wave = wave_window_pause(wave_id=wave.pk)
    assert wave.state == WaveState.PAUSED
    event = last_event("soa.wave.paused", wave)
    assert event.actor is None and "closed at" in event.reason
    assert (event.before["state"], event.after["state"]) == ("RUNNING", "PAUSED")


def test_the_window_pause_is_refused_while_the_window_is_open_and_on_a_wave_that_is_not_running(people):
    wave = running_wave(people)
    with pytest.raises(SoaError, match="still open"):
        wave_window_pause(wave_id=wave.pk)
    wave_pause(actor=people["op"], wave_id=wave.pk)
    PilotWave.objects.filter(pk=wave.pk).update(window_end=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(SoaError, match="is paused; only running waves can be paused"):
        wave_window_pause(wave_id=wave.pk)  # PAUSED -> PAUSED is not a move
    assert len(events("soa.wave.paused", wave)) == 1


@pytest.mark.parametrize("current,target", list(itertools.product(MemberState, MemberState)))
def test_a_member_move_is_allowed_exactly_when_the_member_table_has_it(current, target):
    if target in MEMBER_TRANSITIONS[current]:
        require_member_transition(current, target)
    else:
        with pytest.raises(SoaError, match="wave member cannot become"):
            require_member_transition(current, target)
