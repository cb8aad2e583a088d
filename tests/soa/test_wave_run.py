"""Running services: start, pause, resume and member retry; their refusals, audit events and queued batches.
(The flips themselves are tested against the emulator in tests/writeback/test_wave_jobs.py.)"""

import datetime as dt
from unittest import mock

import pytest
from django.utils import timezone

from soa.choices import MemberState, WaveState
from soa.models import PilotWave
from soa.services import SoaError
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_member_retry, wave_pause, wave_resume, wave_start
from soa.services.waves import wave_update
from tests.soa.test_wave_support import FINANCE, cast, last_event, make_mailbox, new_wave, submitted_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


@pytest.fixture
def enqueued():
    """The wave ids whose next batch was queued (after commit), instead of touching Redis."""
    with mock.patch("soa.jobs.wave_enqueue") as enqueue:
        yield enqueue


def approved_wave(people, *mailboxes, **options):
    wave = submitted_wave(people["op"], *(mailboxes or [make_mailbox("Ann Archer")]), **options)
    return wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)


def test_start_runs_an_approved_wave_with_audit_and_queues_it_on_commit(
    people, enqueued, django_capture_on_commit_callbacks
):
    wave = approved_wave(people)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        wave = wave_start(actor=people["op2"], wave_id=wave.pk)
    assert wave.state == WaveState.RUNNING and wave.started_at is not None
    assert len(callbacks) == 1
    enqueued.assert_called_once_with(wave_id=wave.pk)
    event = last_event("soa.wave.started", wave)
    assert event.actor == people["op2"]
    assert (event.before["state"], event.after["state"]) == (WaveState.APPROVED, WaveState.RUNNING)


def test_start_refuses_waves_that_are_not_approved_and_people_without_the_run_role(people, enqueued):
    draft = new_wave(people["op"], make_mailbox("Ann Archer"))
    with pytest.raises(SoaError, match="is draft; only approved or paused waves can be started"):
        wave_start(actor=people["op"], wave_id=draft.pk)
    wave = approved_wave(people, make_mailbox("Bob Baker"), name="Pilot 2")
    with pytest.raises(SoaError, match="Your roles do not allow running pilot waves"):
        wave_start(actor=people["approver"], wave_id=wave.pk)
    wave_start(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="already running"):
        wave_start(actor=people["op"], wave_id=wave.pk)
    wave_pause(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="is paused; resume it"):
        wave_start(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="no pilot wave #999999"):
        wave_start(actor=people["op"], wave_id=999999)


def test_start_refuses_outside_the_schedule_window_and_says_when_it_opens(people, enqueued):
    opens = timezone.now() + dt.timedelta(hours=5)
    wave = approved_wave(people, window_start=opens, window_end=opens + dt.timedelta(hours=2))
    with pytest.raises(SoaError, match=f"window, which opens at {opens:%Y-%m-%d %H:%M} UTC"):
        wave_start(actor=people["op"], wave_id=wave.pk)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.APPROVED
    # A window that has closed since approval cannot be waited for.
    PilotWave.objects.filter(pk=wave.pk).update(
        window_start=timezone.now() - dt.timedelta(hours=3), window_end=timezone.now() - dt.timedelta(hours=1)
    )
    with pytest.raises(SoaError, match="closed at .* cancel the wave"):
        wave_start(actor=people["op"], wave_id=wave.pk)
    PilotWave.objects.filter(pk=wave.pk).update(window_end=timezone.now() + dt.timedelta(hours=1))
    assert wave_start(actor=people["op"], wave_id=wave.pk).state == WaveState.RUNNING


def test_start_refuses_an_operator_whose_scope_misses_members(people, enqueued):
    wave = approved_wave(people, make_mailbox("Fay Finance", FINANCE))
    with pytest.raises(SoaError, match="outside your scope: fay.finance@corp.example.com"):
        wave_start(actor=people["sales_op"], wave_id=wave.pk)


def test_pause_and_resume_with_audit(people, enqueued, django_capture_on_commit_callbacks):
    wave = approved_wave(people)
    with pytest.raises(SoaError, match="is approved; only running waves can be paused"):
        wave_pause(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="is approved; only paused waves can be resumed"):
        wave_resume(actor=people["op"], wave_id=wave.pk)
    wave_start(actor=people["op"], wave_id=wave.pk)
    paused = wave_pause(actor=people["op2"], wave_id=wave.pk, reason=" help desk asked ")
    assert paused.state == WaveState.PAUSED
    event = last_event("soa.wave.paused", wave)
    assert event.reason == "help desk asked" and event.after["state"] == WaveState.PAUSED
    with django_capture_on_commit_callbacks(execute=True):
        resumed = wave_resume(actor=people["op"], wave_id=wave.pk)
    assert resumed.state == WaveState.RUNNING
    assert last_event("soa.wave.resumed", wave).before["state"] == WaveState.PAUSED
    enqueued.assert_called_with(wave_id=wave.pk)


def test_resume_refuses_once_the_window_has_closed(people, enqueued):
    wave = approved_wave(people)
    wave_start(actor=people["op"], wave_id=wave.pk)
    wave_pause(actor=people["op"], wave_id=wave.pk)
    PilotWave.objects.filter(pk=wave.pk).update(
        window_start=timezone.now() - dt.timedelta(hours=3), window_end=timezone.now() - dt.timedelta(minutes=1)
    )
    with pytest.raises(SoaError, match="closed at"):
        wave_resume(actor=people["op"], wave_id=wave.pk)


def test_retry_puts_one_failed_member_back_with_audit(people, enqueued, django_capture_on_commit_callbacks):
    wave = approved_wave(people, make_mailbox("Ann Archer"), make_mailbox("Bob Baker"))
    first, second = wave.members.order_by("pk")
    wave_start(actor=people["op"], wave_id=wave.pk)
    first.state, first.attempts, first.last_error = MemberState.FAILED, 5, "ExoTransient: 503"
    first.started_at = first.finished_at = timezone.now()
    first.save()
    with pytest.raises(SoaError, match="is pending in wave “Pilot 1”; only a failed member can be retried"):
        wave_member_retry(actor=people["op"], member_id=second.pk)
    with pytest.raises(SoaError, match="Your roles do not allow running"):
        wave_member_retry(actor=people["approver"], member_id=first.pk)
    with django_capture_on_commit_callbacks(execute=True):
        member = wave_member_retry(actor=people["op"], member_id=first.pk)
    assert (member.state, member.attempts, member.last_error, member.finished_at) == (MemberState.PENDING, 0, "", None)
    assert member.started_at is not None  # kept: the runner reads the mailbox before writing again
    event = last_event("soa.wave.member_retried", member)
    assert event.actor == people["op"]
    assert (event.before["state"], event.after["state"]) == (MemberState.FAILED, MemberState.PENDING)
    enqueued.assert_called_with(wave_id=wave.pk)


def test_retry_refuses_unless_the_wave_is_running_or_paused(people, enqueued):
    wave = approved_wave(people)
    member = wave.members.get()
    member.state = MemberState.FAILED
    member.save()
    with pytest.raises(SoaError, match="is approved; a member can be retried only while its wave is running or paused"):
        wave_member_retry(actor=people["op"], member_id=member.pk)
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.COMPLETED_WITH_ERRORS)
    with pytest.raises(SoaError, match="is completed with errors; a member can be retried only"):
        wave_member_retry(actor=people["op"], member_id=member.pk)
    with pytest.raises(SoaError, match="no wave member #999999"):
        wave_member_retry(actor=people["op"], member_id=999999)
    enqueued.assert_not_called()


def test_a_wave_changed_back_to_draft_cannot_be_started(people, enqueued):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    wave_update(actor=people["op"], wave_id=wave.pk, batch_size=10)
    with pytest.raises(SoaError, match="only approved or paused waves can be started"):
        wave_start(actor=people["op"], wave_id=wave.pk)
