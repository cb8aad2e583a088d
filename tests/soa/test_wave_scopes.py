"""Every wave action obeys the OU scope, four-eyes holds for every hand that shaped a wave, and a refused wave POST
answers 400, 403 or 409 (never 200), with the page offering only what the user may do."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.roles import Role
from soa.choices import MemberState, WaveState
from soa.models import Approval, PilotWave, WaveMember
from soa.services import SoaError
from soa.services.approvals import wave_approve, wave_approvers
from soa.services.wave_members import wave_add_members, wave_remove_members
from soa.services.wave_run import wave_pause, wave_start
from soa.services.waves import wave_cancel, wave_create, wave_submit, wave_update, wave_withdraw
from soa.wave_actions import wave_actions
from tests.soa.test_wave_support import (
    FINANCE,
    events,
    make_mailbox,
    new_wave,
    page_cast,
    page_text,
    signed_in,
    submitted_wave,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return page_cast(make_user)


def _approved(people, **options) -> PilotWave:
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE), **options)
    return wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)


def _running(people) -> PilotWave:
    return wave_start(actor=people["op"], wave_id=_approved(people).pk)


def _paused(people) -> PilotWave:
    return wave_pause(actor=people["op"], wave_id=_running(people).pk)


# -- scope on pause and cancel ------------------------------------------------------------------------------------


def test_an_operator_scoped_to_sales_cannot_pause_a_wave_with_finance_members(client, people):
    wave = _running(people)
    with pytest.raises(SoaError, match="outside your scope for running waves, so you cannot pause wave"):
        wave_pause(actor=people["sales_op"], wave_id=wave.pk)
    allowed = wave_actions(user=people["sales_op"], wave=wave)["pause"]
    assert not allowed and allowed.shown and "finn.fisher@corp.example.com" in allowed.reason
    signed_in(client, people["sales_op"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert 'data-testid="pause-form"' not in page
    response = client.post(reverse("wave_pause", args=[wave.pk]), {"reason": "mine"})
    assert response.status_code == 403 and "you cannot pause wave" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.RUNNING
    assert not events("soa.wave.paused")
    # A tenant-wide operator pauses it.
    assert wave_pause(actor=people["op2"], wave_id=wave.pk).state == WaveState.PAUSED


@pytest.mark.parametrize("build", [_approved, _paused], ids=["approved", "paused"])
def test_an_operator_scoped_to_sales_cannot_cancel_an_approved_or_paused_wave_with_finance_members(
    client, people, build
):
    wave = build(people)
    state = wave.state
    with pytest.raises(SoaError, match="outside your scope"):
        wave_cancel(actor=people["sales_op"], wave_id=wave.pk, reason="stop")
    signed_in(client, people["sales_op"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert reverse("wave_cancel", args=[wave.pk]) not in page
    response = client.post(reverse("wave_cancel", args=[wave.pk]), {"reason": "stop"})
    assert response.status_code == 403 and "outside your scope" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == state
    assert wave_cancel(actor=people["op2"], wave_id=wave.pk, reason="stop").state == WaveState.CANCELLED


def test_a_sales_wave_is_paused_and_cancelled_by_the_sales_operator(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op"], wave_id=wave.pk)
    assert wave_pause(actor=people["sales_op"], wave_id=wave.pk).state == WaveState.PAUSED
    assert wave_cancel(actor=people["sales_op"], wave_id=wave.pk, reason="done").state == WaveState.CANCELLED


# -- four-eyes over every hand that shaped the wave -----------------------------------------------------------------


@pytest.fixture
def both(make_user):
    """An operator who also holds the approver role: four-eyes is all that stands between them and their wave."""
    return make_user("bea", Role.WAVE_OPERATOR, Role.APPROVER)


def test_who_removed_members_cannot_approve(people, both):
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    wave = new_wave(people["op"], ann, bob)
    wave_remove_members(actor=both, wave_id=wave.pk, mailbox_ids=[bob.pk])
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave.refresh_from_db()
    assert not wave.members.filter(added_by=both).exists()  # nothing on the wave's rows names them
    with pytest.raises(SoaError, match="You removed members from this wave; another approver must decide on it"):
        wave_approve(actor=both, wave_id=wave.pk, acknowledge_warnings=True)
    assert both not in wave_approvers(wave)
    assert people["approver"] in wave_approvers(wave)


def test_who_withdrew_the_wave_cannot_approve_its_next_submission(people, both):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    wave_withdraw(actor=both, wave_id=wave.pk, reason="one more look")
    wave_submit(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="You withdrew this wave to a draft"):
        wave_approve(actor=both, wave_id=wave.pk, acknowledge_warnings=True)


def test_who_submitted_an_earlier_round_or_changed_the_settings_cannot_approve(people, both, make_user):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    wave_submit(actor=both, wave_id=wave.pk)
    wave_withdraw(actor=people["op"], wave_id=wave.pk)
    wave_submit(actor=people["op"], wave_id=wave.pk)  # the wave now names op as its submitter
    with pytest.raises(SoaError, match="You submitted this wave"):
        wave_approve(actor=both, wave_id=wave.pk, acknowledge_warnings=True)
    tuner = make_user("tia", Role.WAVE_OPERATOR, Role.APPROVER)
    other = wave_create(actor=people["op"], name="Other", direction="TO_CLOUD")
    wave_add_members(actor=people["op"], wave_id=other.pk, mailbox_ids=[make_mailbox("Cid Cole").pk])
    wave_update(actor=tuner, wave_id=other.pk, batch_size=10)
    wave_submit(actor=people["op"], wave_id=other.pk)
    with pytest.raises(SoaError, match="You changed this wave's settings"):
        wave_approve(actor=tuner, wave_id=other.pk, acknowledge_warnings=True)


def test_a_shaping_hand_sees_no_decision_form_and_a_forged_post_is_refused_with_403(client, people, both):
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    wave = new_wave(people["op"], ann, bob)
    wave_remove_members(actor=both, wave_id=wave.pk, mailbox_ids=[bob.pk])
    wave_submit(actor=people["op"], wave_id=wave.pk)
    signed_in(client, both)
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert 'data-testid="approve-form"' not in page and 'data-testid="reject-form"' not in page
    assert "You removed members from this wave" in page
    for view, form in (("wave_approve", {"acknowledge_warnings": "on"}), ("wave_reject", {"reason": "no"})):
        response = client.post(reverse(view, args=[wave.pk]), form)
        assert response.status_code == 403 and "You removed members from this wave" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.SUBMITTED and not Approval.objects.exists()


# -- a refused POST says so in its status -------------------------------------------------------------------------


def _draft(people):
    return new_wave(people["op"], make_mailbox("Ann Archer"))


def _empty(people):
    return new_wave(people["op"])


def _future_window(people):
    opens = timezone.now() + dt.timedelta(hours=5)
    return _approved(people, window_start=opens, window_end=opens + dt.timedelta(hours=2))


def _running_with_a_failure(people):
    wave = _running(people)
    WaveMember.objects.filter(wave=wave, mailbox__upn__startswith="ann.").update(
        state=MemberState.FAILED, last_error="ExoNotFound", finished_at=timezone.now()
    )
    return wave


def _completed_with_a_failure(people):
    wave = _running_with_a_failure(people)
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.COMPLETED_WITH_ERRORS, finished_at=timezone.now())
    return wave


# (what, how to build the wave, who posts, view, form, status, words of the refusal)
REFUSALS = [
    ("pause outside the scope", _running, "sales_op", "wave_pause", {}, 403, "cannot pause"),
    ("pause an approved wave", _approved, "op", "wave_pause", {}, 409, "only running waves can be paused"),
    ("resume a running wave", _running, "op", "wave_resume", {}, 409, "only paused waves can be resumed"),
    ("start outside the window", _future_window, "op", "wave_start", {}, 409, "only inside its schedule window"),
    ("start outside the scope", _approved, "sales_op", "wave_start", {}, 403, "outside your scope"),
    ("cancel a running wave", _running, "op", "wave_cancel", {"reason": "x"}, 409, "pause it first"),
    ("withdraw a draft", _draft, "op", "wave_withdraw", {}, 409, "can be withdrawn to draft"),
    ("submit an empty wave", _empty, "op", "wave_submit", {}, 409, "has no members"),
    ("approve a draft", _draft, "approver", "wave_approve", {}, 409, "only submitted waves"),
    ("approve one's own wave", _approved, "op", "wave_approve", {}, 403, "do not allow approving"),
    ("rollback of a running wave", _running, "op", "wave_rollback", {}, 409, "only a completed wave"),
    ("add to an approved wave", _approved, "op", "wave_add_members", {"mailbox": ["1"]}, 409, "only change while"),
    ("remove strangers", _draft, "op", "wave_remove_members", {"mailbox": ["999999"]}, 400, "not members"),
    ("pause with an overlong reason", _running, "op", "wave_pause", {"reason": "r" * 1001}, 400, "at most 1000"),
]


@pytest.mark.parametrize(
    ("build", "who", "view", "form", "status", "words"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_refused_wave_post_answers_with_its_status(client, people, build, who, view, form, status, words):
    wave = build(people)
    before = (wave.state, wave.version, wave.members.count())
    response = signed_in(client, people[who]).post(reverse(view, args=[wave.pk]), form)
    assert response.status_code == status and words in page_text(response)
    wave = PilotWave.objects.get(pk=wave.pk)
    assert (wave.state, wave.version, wave.members.count()) == before


def test_a_refused_retry_answers_409_and_an_out_of_scope_one_403(client, people):
    finished = _completed_with_a_failure(people)
    failed = finished.members.get(state=MemberState.FAILED)
    response = signed_in(client, people["op"]).post(reverse("wave_member_retry", args=[finished.pk, failed.pk]))
    assert response.status_code == 409 and "can be retried only while its wave is running or paused" in page_text(
        response
    )
    running = _running(people)
    finn = running.members.get(mailbox__upn__startswith="finn.")
    WaveMember.objects.filter(pk=finn.pk).update(state=MemberState.FAILED, finished_at=timezone.now())
    response = signed_in(client, people["sales_op"]).post(reverse("wave_member_retry", args=[running.pk, finn.pk]))
    assert response.status_code == 403 and "outside your scope for running waves" in page_text(response)
    assert WaveMember.objects.get(pk=finn.pk).state == MemberState.FAILED
