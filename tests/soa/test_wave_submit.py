"""Submission (pre-flight frozen, snapshots, exclusions, approvers emailed), withdrawal and cancellation."""

import datetime as dt

import pytest
from django.core import mail
from django.utils import timezone

from portal.roles import Role
from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox, PilotWave
from soa.services import SoaError
from soa.services.approvals import wave_approve, wave_notify_approvers
from soa.services.wave_members import wave_add_members
from soa.services.waves import wave_cancel, wave_submit, wave_withdraw
from tests.soa.test_wave_support import (
    FINANCE,
    SALES,
    cast,
    last_event,
    make_mailbox,
    new_wave,
    submitted_wave,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def test_submit_freezes_report_snapshots_and_excludes_blocked_members(people, settings):
    settings.WAVE_APPROVAL_DAYS = 3
    ann = make_mailbox("Ann Archer")
    ann.ad_values = {**ann.ad_values, "CustomAttribute1": "contractor"}
    ann.save()
    bob = make_mailbox("Bob Baker", in_ad=False)
    wave = new_wave(people["op"], ann, bob)
    before = timezone.now()
    wave = wave_submit(actor=people["op2"], wave_id=wave.pk)
    assert (wave.state, wave.submitted_by, wave.submission_round) == (WaveState.SUBMITTED, people["op2"], 1)
    assert before <= wave.submitted_at <= timezone.now()
    assert wave.approval_expires_at == wave.submitted_at + dt.timedelta(days=3)
    report = wave.preflight_report
    assert report["summary"]["eligible"] == 1 and report["summary"]["blocking"] == {"MISSING_IN_AD": 1}
    assert report["acknowledge"] == ["EXO_VALUES_WIN"] and report["parameters"]["quiet_period_hours"] == 24.5
    included, excluded = wave.members.get(mailbox=ann), wave.members.get(mailbox=bob)
    assert (included.excluded, included.state) == (False, MemberState.PENDING)
    assert included.preflight["warnings"][0]["code"] == "EXO_VALUES_WIN"
    assert included.snapshot["exo"]["CustomAttribute1"] == "staff"
    assert included.snapshot["ad"]["CustomAttribute1"] == "contractor"
    assert included.snapshot["authority"] == Authority.ON_PREM and included.snapshot["mailbox_version"] == 1
    assert (excluded.excluded, excluded.state) == (True, MemberState.SKIPPED)
    assert excluded.last_error == "Excluded by pre-flight: MISSING_IN_AD"
    event = last_event("soa.wave.submitted", wave)
    assert event.actor == people["op2"] and event.before["state"] == "DRAFT" and event.after["state"] == "SUBMITTED"
    assert event.after["excluded"] == 1 and event.after["preflight_summary"]["blocked"] == 1


def test_the_frozen_report_does_not_follow_later_changes(people):
    ann = make_mailbox("Ann Archer")
    wave = submitted_wave(people["op"], ann)
    Mailbox.objects.filter(pk=ann.pk).update(in_ad=False, exo_values={"CustomAttribute1": "changed"})
    wave.refresh_from_db()
    member = wave.members.get()
    assert wave.preflight_report["summary"]["eligible"] == 1 and not member.excluded
    assert member.snapshot["exo"]["CustomAttribute1"] == "staff"


def test_submit_refuses_an_empty_wave(people):
    wave = new_wave(people["op"])
    with pytest.raises(SoaError, match="has no members; add mailboxes before submitting it"):
        wave_submit(actor=people["op"], wave_id=wave.pk)


def test_submit_refuses_a_wave_whose_every_member_is_blocked(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer", in_ad=False), make_mailbox("Bob Baker", in_ad=False))
    with pytest.raises(SoaError, match=r"Every member of wave “Pilot 1” is blocked by pre-flight \(MISSING_IN_AD ×2\)"):
        wave_submit(actor=people["op"], wave_id=wave.pk)
    wave.refresh_from_db()
    assert wave.state == WaveState.DRAFT and wave.preflight_report == {}
    assert not wave.members.filter(excluded=True).exists()


def test_submit_refuses_a_wave_above_the_cloud_managed_ceiling(people, settings):
    settings.WAVE_CLOUD_MANAGED_CEILING = 1
    wave = new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Bob Baker"))
    with pytest.raises(SoaError, match="above the ceiling of 1; remove at least 1 members"):
        wave_submit(actor=people["op"], wave_id=wave.pk)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.DRAFT


def test_submitter_needs_every_member_in_scope(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer", SALES), make_mailbox("Cid Cole", FINANCE))
    with pytest.raises(SoaError, match="outside your wave-building scope: cid.cole@corp.example.com"):
        wave_submit(actor=people["sales_op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="do not allow building"):
        wave_submit(actor=people["approver"], wave_id=wave.pk)


def test_overlapping_waves_the_second_submission_excludes_the_shared_member(people):
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    first = new_wave(people["op"], ann, name="First")
    second = new_wave(people["op2"], ann, bob, name="Second")
    wave_submit(actor=people["op"], wave_id=first.pk)
    second = wave_submit(actor=people["op2"], wave_id=second.pk)
    shared = second.members.get(mailbox=ann)
    assert shared.excluded and shared.preflight["blocking"][0]["message"] == "Already in the open wave “First”."


def test_approvers_who_may_decide_are_emailed_after_commit(
    people, make_user, settings, django_capture_on_commit_callbacks
):
    settings.PORTAL_BASE_URL = "https://soa.corp.example.com/"
    for key, address in [("approver", "anna@corp"), ("approver2", "arno@corp"), ("sales_approver", "sam@corp"),
                         ("op", "olga@corp")]:  # fmt: skip
        people[key].email = address
        people[key].save()
    both = make_user("bert", Role.APPROVER, Role.WAVE_OPERATOR)
    both.email = "bert@corp"
    both.save()
    wave = new_wave(people["op"], make_mailbox("Ann Archer", SALES), make_mailbox("Cid Cole", FINANCE))
    with django_capture_on_commit_callbacks(execute=True):
        wave = wave_submit(actor=both, wave_id=wave.pk)
    # the submitter is not asked; Sam's scope does not cover Finance; operators are not approvers
    assert sorted(message.to[0] for message in mail.outbox) == ["anna@corp", "arno@corp"]
    message = mail.outbox[0]
    assert message.subject == "Pilot wave “Pilot 1” awaits your approval"
    assert f"https://soa.corp.example.com/waves/{wave.pk}/" in message.body
    assert "Members: 2 (2 to move, 0 excluded by pre-flight)" in message.body
    assert "bert submitted the pilot wave" in message.body


def test_notification_is_quiet_for_a_wave_no_longer_awaiting_approval(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    assert wave_notify_approvers(wave_id=wave.pk) == 0 and not mail.outbox


# -- withdrawal ----------------------------------------------------------------------------------------------------


def test_withdraw_returns_to_draft_and_old_approvals_stop_counting(people):
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker", in_ad=False)
    wave = submitted_wave(people["op"], ann, bob, required_approvals=2)
    wave_approve(actor=people["approver"], wave_id=wave.pk)
    wave = wave_withdraw(actor=people["op"], wave_id=wave.pk, reason="add the managers")
    assert wave.state == WaveState.DRAFT and wave.preflight_report == {} and wave.submitted_by is None
    assert wave.approval_expires_at is None
    assert set(wave.members.values_list("state", "excluded")) == {(MemberState.PENDING, False)}
    event = last_event("soa.wave.withdrawn", wave)
    assert event.reason == "add the managers" and event.before["approvals"] == 1 and event.after["state"] == "DRAFT"
    wave_add_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=[make_mailbox("Cid Cole").pk])
    wave = wave_submit(actor=people["op"], wave_id=wave.pk)
    assert wave.submission_round == 2 and wave.audit_snapshot()["approvals"] == 0
    wave = wave_approve(actor=people["approver"], wave_id=wave.pk)  # a new round: Anna may decide again
    assert wave.state == WaveState.SUBMITTED and wave.audit_snapshot()["approvals"] == 1


# -- cancellation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "who"),
    [(WaveState.DRAFT, "op"), (WaveState.SUBMITTED, "op2"), (WaveState.APPROVED, "op"), (WaveState.PAUSED, "op")],
)
def test_cancel_from_each_allowed_state_skips_members_not_started(people, state, who):
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    wave = new_wave(people["op"], ann, bob)
    PilotWave.objects.filter(pk=wave.pk).update(state=state)
    wave.members.filter(mailbox=bob).update(state=MemberState.DONE)
    wave = wave_cancel(actor=people[who], wave_id=wave.pk, reason="  business freeze ")
    assert wave.state == WaveState.CANCELLED and wave.finished_at is not None
    assert wave.members.get(mailbox=ann).state == MemberState.SKIPPED
    assert wave.members.get(mailbox=ann).last_error == "Wave cancelled: business freeze"
    assert wave.members.get(mailbox=bob).state == MemberState.DONE
    event = last_event("soa.wave.cancelled", wave)
    assert (event.before["state"], event.after["state"], event.reason) == (state, "CANCELLED", "business freeze")


def test_cancel_needs_a_reason_and_the_right_role(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    with pytest.raises(SoaError, match="Give a reason for cancelling"):
        wave_cancel(actor=people["op"], wave_id=wave.pk, reason=" ")
    with pytest.raises(SoaError, match="do not allow cancelling"):
        wave_cancel(actor=people["approver"], wave_id=wave.pk, reason="no")
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.DRAFT


def test_cancel_of_approved_or_paused_wave_needs_the_run_action(people, make_user):
    from django.contrib.auth.models import Group, Permission

    # a builder-only role: operators normally hold run too, so make one without it
    group = Group.objects.create(name="builders")
    group.permissions.set(
        Permission.objects.filter(
            content_type__app_label="portal", codename__in=["wave_build", "wave_view", "mailbox_view"]
        )
    )
    builder = make_user("bill")
    builder.role_assignments.create(role=group, tenant_wide=True)
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.APPROVED)
    with pytest.raises(SoaError, match="do not allow running pilot waves"):
        wave_cancel(actor=builder, wave_id=wave.pk, reason="stop")
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.SUBMITTED)
    assert wave_cancel(actor=builder, wave_id=wave.pk, reason="stop").state == WaveState.CANCELLED


@pytest.mark.parametrize("state", [WaveState.DRAFT, WaveState.PAUSED])
def test_cancel_is_refused_to_an_operator_scoped_away_from_some_members(people, state):
    """Cancelling stops every member's move: an operator scoped to Sales may not stop Finance's mailboxes."""
    wave = new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Fay Finch", FINANCE))
    PilotWave.objects.filter(pk=wave.pk).update(state=state)
    with pytest.raises(SoaError, match=r"1 member is outside your scope, so you cannot cancel .*fay\.finch"):
        wave_cancel(actor=people["sales_op"], wave_id=wave.pk, reason="stop")
    assert PilotWave.objects.get(pk=wave.pk).state == state
    assert wave_cancel(actor=people["op"], wave_id=wave.pk, reason="stop").state == WaveState.CANCELLED


def test_a_running_wave_must_be_paused_before_cancelling(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.RUNNING)
    with pytest.raises(SoaError, match="is running; pause it first"):
        wave_cancel(actor=people["op"], wave_id=wave.pk, reason="stop")


@pytest.mark.django_db(transaction=True)
def test_overlapping_waves_submitted_at_the_same_moment_never_both_claim_a_mailbox(people):
    """Each submission locks its members' mailbox rows, so the later one sees the earlier one's claim."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("row locks and concurrent writers need PostgreSQL (SQLite serialises whole transactions)")
    import threading

    from django.db import connections

    shared = make_mailbox("Ann Archer")
    waves = [
        new_wave(people["op"], shared, make_mailbox("Bob Baker"), name="East"),
        new_wave(people["op2"], shared, make_mailbox("Cid Cole"), name="West"),
    ]
    barrier, errors = threading.Barrier(2), []

    def submit(wave, actor):
        try:
            barrier.wait()
            wave_submit(actor=actor, wave_id=wave.pk)
        except Exception as exc:  # noqa: BLE001 - reported to the test thread below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=submit, args=(w, a)) for w, a in zip(waves, [people["op"], people["op2"]], strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    claims = [w.members.get(mailbox=shared) for w in waves]
    assert sorted(member.excluded for member in claims) == [False, True]
    assert all(PilotWave.objects.get(pk=w.pk).state == WaveState.SUBMITTED for w in waves)
