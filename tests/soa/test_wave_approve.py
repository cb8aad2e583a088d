"""Approval: four-eyes, quorum, expiry, warnings acknowledgement, approver scope, rejection with a reason."""

import datetime as dt

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.roles import Role
from soa.choices import Decision, MemberState, WaveState
from soa.models import Approval, PilotWave
from soa.selectors import approvable_waves
from soa.services import SoaError
from soa.services.approvals import approval_refusal, wave_approve, wave_approvers, wave_reject
from soa.services.wave_members import wave_add_members
from soa.services.waves import wave_create, wave_submit
from tests.soa.test_wave_support import (
    FINANCE,
    SALES,
    cast,
    events,
    last_event,
    make_mailbox,
    new_wave,
    submitted_wave,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def test_one_approval_approves_by_default_with_audit(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    wave = wave_approve(actor=people["approver"], wave_id=wave.pk, reason=" looks good ")
    assert wave.state == WaveState.APPROVED and wave.version == 4
    approval = Approval.objects.get(wave=wave)
    assert (approval.approver, approval.decision, approval.reason, approval.round) == (
        people["approver"], Decision.APPROVE, "looks good", 1
    )  # fmt: skip
    event = last_event("soa.wave.approved", wave)
    assert event.actor == people["approver"] and event.reason == "looks good"
    assert (event.before["state"], event.after["state"], event.after["approvals"]) == ("SUBMITTED", "APPROVED", 1)


def test_quorum_of_two_distinct_approvers(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"), required_approvals=2)
    wave = wave_approve(actor=people["approver"], wave_id=wave.pk)
    assert wave.state == WaveState.SUBMITTED
    recorded = last_event("soa.wave.approval_recorded", wave)
    assert recorded.after["approvals"] == 1 and recorded.after["state"] == "SUBMITTED"
    assert not events("soa.wave.approved", wave)
    with pytest.raises(SoaError, match="You have already decided on this submission"):
        wave_approve(actor=people["approver"], wave_id=wave.pk)
    wave = wave_approve(actor=people["approver2"], wave_id=wave.pk)
    assert wave.state == WaveState.APPROVED
    assert last_event("soa.wave.approved", wave).after["approvals"] == 2


def test_the_database_refuses_a_second_decision_by_the_same_approver(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"), required_approvals=2)
    wave_approve(actor=people["approver"], wave_id=wave.pk)
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.create(wave=wave, round=1, approver=people["approver"], decision=Decision.APPROVE)


def test_submitter_cannot_approve_own_wave(people, make_user):
    # holding both roles does not help
    both = make_user("bert", Role.WAVE_OPERATOR, Role.APPROVER)
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    wave_submit(actor=both, wave_id=wave.pk)
    with pytest.raises(SoaError, match="You submitted this wave; another approver must decide on it"):
        wave_approve(actor=both, wave_id=wave.pk)
    with pytest.raises(SoaError, match="You submitted this wave"):
        wave_reject(actor=both, wave_id=wave.pk, reason="oops")
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.SUBMITTED
    assert not Approval.objects.exists()


def test_submitter_cannot_approve_even_as_admin_holding_every_role(people, make_user):
    admin = make_user("root", Role.ADMIN, Role.WAVE_OPERATOR, Role.APPROVER)
    admin.is_superuser = True
    admin.save()
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    wave_submit(actor=admin, wave_id=wave.pk)
    with pytest.raises(SoaError, match="You submitted this wave"):
        wave_approve(actor=admin, wave_id=wave.pk, acknowledge_warnings=True)


def test_creator_and_member_choosers_cannot_approve(people, make_user):
    creator = make_user("cora", Role.WAVE_OPERATOR, Role.APPROVER)
    chooser = make_user("chad", Role.WAVE_OPERATOR, Role.APPROVER)
    wave = wave_create(actor=creator, name="W", direction="TO_CLOUD")
    wave_add_members(actor=chooser, wave_id=wave.pk, mailbox_ids=[make_mailbox("Ann Archer").pk])
    wave_submit(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="You created this wave"):
        wave_approve(actor=creator, wave_id=wave.pk)
    with pytest.raises(SoaError, match="You chose members of this wave"):
        wave_approve(actor=chooser, wave_id=wave.pk)
    assert wave_approve(actor=people["approver"], wave_id=wave.pk).state == WaveState.APPROVED


@pytest.mark.parametrize("who", ["op", "helpdesk"])
def test_only_approvers_decide(people, who):
    wave = submitted_wave(people["op2"], make_mailbox("Ann Archer"))
    with pytest.raises(SoaError, match="Your roles do not allow approving or rejecting pilot waves"):
        wave_approve(actor=people[who], wave_id=wave.pk)


def test_an_expired_submission_cannot_be_approved_and_says_so(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    expired = timezone.now() - dt.timedelta(minutes=1)
    PilotWave.objects.filter(pk=wave.pk).update(approval_expires_at=expired)
    with pytest.raises(SoaError) as refused:
        wave_approve(actor=people["approver"], wave_id=wave.pk)
    assert str(refused.value) == (
        f"The approval window of wave “Pilot 1” closed on {expired:%Y-%m-%d %H:%M} UTC. Its pre-flight may be out "
        "of date: the operator must withdraw it to a draft and submit it again."
    )
    assert not approvable_waves(user=people["approver"]).exists()
    # rejecting still closes it
    assert wave_reject(actor=people["approver"], wave_id=wave.pk, reason="stale").state == WaveState.REJECTED


def test_approval_window_follows_the_setting(people, settings):
    settings.WAVE_APPROVAL_DAYS = 1
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    assert wave.approval_expires_at - wave.submitted_at == dt.timedelta(days=1)
    assert not approval_refusal(people["approver"], wave, now=wave.submitted_at + dt.timedelta(hours=23))
    assert "closed on" in approval_refusal(people["approver"], wave, now=wave.submitted_at + dt.timedelta(days=1))


def test_warnings_must_be_acknowledged_and_the_codes_are_kept(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer", exo_when_changed=None))
    with pytest.raises(SoaError, match=r"has warnings \(LAST_CHANGE_UNKNOWN\); read them and acknowledge them"):
        wave_approve(actor=people["approver"], wave_id=wave.pk)
    assert not Approval.objects.exists()
    wave = wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    assert wave.state == WaveState.APPROVED
    assert Approval.objects.get().acknowledged_warnings == ["LAST_CHANGE_UNKNOWN"]
    assert last_event("soa.wave.approved", wave).after["acknowledged_warnings"] == ["LAST_CHANGE_UNKNOWN"]


def test_approver_scope_must_cover_every_included_member(people):
    cid = make_mailbox("Cid Cole", FINANCE)
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer", SALES), cid)
    with pytest.raises(SoaError, match=r"includes mailboxes outside your approval scope \(cid.cole@corp.example.com\)"):
        wave_approve(actor=people["sales_approver"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="outside your approval scope"):
        wave_reject(actor=people["sales_approver"], wave_id=wave.pk, reason="no")
    # an excluded member is not flipped, so it does not need the approver's scope
    other = submitted_wave(
        people["op"], make_mailbox("Abe Ames", SALES), make_mailbox("Fay Fox", FINANCE, in_ad=False), name="Other"
    )
    assert wave_approve(actor=people["sales_approver"], wave_id=other.pk).state == WaveState.APPROVED


def test_rejection_needs_a_reason_and_ends_the_wave(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"), required_approvals=2)
    wave_approve(actor=people["approver"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="Give a reason for rejecting the wave"):
        wave_reject(actor=people["approver2"], wave_id=wave.pk, reason="  ")
    wave = wave_reject(actor=people["approver2"], wave_id=wave.pk, reason="Finance quarter close")
    assert wave.state == WaveState.REJECTED and wave.finished_at is not None
    assert set(wave.members.values_list("state", flat=True)) == {MemberState.SKIPPED}
    assert Approval.objects.get(decision=Decision.REJECT).reason == "Finance quarter close"
    event = last_event("soa.wave.rejected", wave)
    assert (event.actor, event.reason, event.before["state"], event.after["state"]) == (
        people["approver2"], "Finance quarter close", "SUBMITTED", "REJECTED"
    )  # fmt: skip


def test_the_database_refuses_a_rejection_without_reason(people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.create(wave=wave, round=1, approver=people["approver"], decision=Decision.REJECT, reason="")


def test_approvable_waves_and_approvers_follow_the_same_rules(people, make_user):
    both = make_user("bert", Role.WAVE_OPERATOR, Role.APPROVER)
    sales = submitted_wave(both, make_mailbox("Ann Archer", SALES), name="Sales")
    mixed = submitted_wave(people["op"], make_mailbox("Bob Baker", SALES), make_mailbox("Cid Cole", FINANCE),
                           name="Mixed", required_approvals=2)  # fmt: skip
    new_wave(people["op"], make_mailbox("Dee Dunn"), name="Draft")
    assert list(approvable_waves(user=people["approver"])) == [sales, mixed]
    assert list(approvable_waves(user=people["sales_approver"])) == [sales]
    assert list(approvable_waves(user=both)) == [mixed]  # not the one Bert built
    assert not approvable_waves(user=people["op"]).exists()
    wave_approve(actor=people["approver"], wave_id=mixed.pk)
    assert list(approvable_waves(user=people["approver"])) == [sales]
    assert [u.username for u in wave_approvers(mixed)] == ["arno", "bert"]
    assert [u.username for u in wave_approvers(sales)] == ["anna", "arno", "sam"]


@pytest.mark.parametrize("state", [s for s in WaveState if s != WaveState.SUBMITTED])
def test_only_submitted_waves_are_decided(people, state):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    PilotWave.objects.filter(pk=wave.pk).update(state=state)
    label = WaveState(state).label.lower()
    with pytest.raises(SoaError, match=f"is {label}; only submitted waves can be approved or rejected"):
        wave_approve(actor=people["approver"], wave_id=wave.pk)
    with pytest.raises(SoaError, match=f"is {label}; only submitted waves can be approved or rejected"):
        wave_reject(actor=people["approver"], wave_id=wave.pk, reason="no")
    assert not Approval.objects.exists()
