"""The wave-actions selector (soa.wave_actions) against the services: for waves in each state and each kind of
user, an action the selector allows succeeds through its service, and one it refuses is refused by the service
with the very same reason. Then the wave pages showing the selector's reasons."""

import datetime as dt

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from soa.choices import MemberState, WaveState
from soa.models import PilotWave, WaveMember
from soa.services import SoaError
from soa.services.approvals import wave_approve, wave_reject
from soa.services.wave_clone import wave_clone
from soa.services.wave_members import wave_add_members
from soa.services.wave_rollback import wave_rollback_create
from soa.services.wave_run import wave_member_retry, wave_pause, wave_resume, wave_start
from soa.services.waves import wave_cancel, wave_preflight, wave_submit, wave_update, wave_withdraw
from soa.wave_actions import WAVE_ACTIONS, Allowed, wave_actions
from tests.soa.test_wave_support import FINANCE, make_mailbox, new_wave, page_cast, page_text, signed_in

pytestmark = pytest.mark.django_db

USERS = ("op", "op2", "sales_op", "approver", "sales_approver", "auditor")


@pytest.fixture
def people(make_user):
    return page_cast(make_user)


def _approved(people, **options) -> PilotWave:
    wave = new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE), **options)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    return wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)


def _running(people) -> PilotWave:
    wave = wave_start(actor=people["op"], wave_id=_approved(people).pk)
    # Ann (in Sales, inside every operator's scope) failed: there is a member to retry.
    WaveMember.objects.filter(wave=wave, mailbox__upn__startswith="ann.").update(
        state=MemberState.FAILED, last_error="ExoNotFound", finished_at=timezone.now()
    )
    return wave


def _completed(people) -> PilotWave:
    wave = _running(people)
    wave.members.update(state=MemberState.DONE, finished_at=timezone.now())
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.COMPLETED, finished_at=timezone.now())
    return PilotWave.objects.get(pk=wave.pk)


def _expired(people) -> PilotWave:
    wave = new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE))
    wave = wave_submit(actor=people["op"], wave_id=wave.pk)
    PilotWave.objects.filter(pk=wave.pk).update(approval_expires_at=timezone.now() - dt.timedelta(minutes=1))
    return wave


def _with_open_rollback(people) -> PilotWave:
    wave = _completed(people)
    wave_rollback_create(actor=people["op"], wave_id=wave.pk)
    return PilotWave.objects.get(pk=wave.pk)


# Each state, how to build it, and what its creator (a tenant-wide operator) may do in it (any wave can be copied).
STATES = {
    "empty draft": (lambda people: new_wave(people["op"]), {"edit_members", "update", "preflight", "cancel", "clone"}),
    "draft": (
        lambda people: new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE)),
        {"edit_members", "update", "preflight", "submit", "cancel", "clone"},
    ),
    "submitted": (
        lambda people: wave_submit(
            actor=people["op"],
            wave_id=new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE)).pk,
        ),
        {"preflight", "withdraw", "cancel", "clone"},
    ),
    "expired": (_expired, {"preflight", "withdraw", "cancel", "clone"}),
    "approved": (_approved, {"preflight", "cancel", "start", "clone"}),
    "approved, window not open": (
        lambda people: _approved(
            people,
            window_start=timezone.now() + dt.timedelta(hours=5),
            window_end=timezone.now() + dt.timedelta(hours=7),
        ),
        {"preflight", "cancel", "clone"},
    ),
    "running": (_running, {"preflight", "pause", "retry_member", "clone"}),
    "paused": (
        lambda people: wave_pause(actor=people["op"], wave_id=_running(people).pk),
        {"preflight", "cancel", "resume", "retry_member", "clone"},
    ),
    "completed": (_completed, {"rollback", "clone"}),
    "completed, rollback open": (_with_open_rollback, {"clone"}),
}


def _call(action: str, user, wave: PilotWave, spare) -> None:
    """The service call behind ``action``, with inputs it accepts whenever its refusal function allows it."""
    member = wave.members.filter(state=MemberState.FAILED).first() or wave.members.order_by("id").first()
    calls = {
        "edit_members": lambda: wave_add_members(actor=user, wave_id=wave.pk, mailbox_ids=[spare.pk]),
        "update": lambda: wave_update(actor=user, wave_id=wave.pk, description="changed"),
        "preflight": lambda: wave_preflight(actor=user, wave_id=wave.pk),
        "submit": lambda: wave_submit(actor=user, wave_id=wave.pk),
        "withdraw": lambda: wave_withdraw(actor=user, wave_id=wave.pk, reason="why"),
        "cancel": lambda: wave_cancel(actor=user, wave_id=wave.pk, reason="why"),
        "approve": lambda: wave_approve(actor=user, wave_id=wave.pk, acknowledge_warnings=True),
        "reject": lambda: wave_reject(actor=user, wave_id=wave.pk, reason="why"),
        "start": lambda: wave_start(actor=user, wave_id=wave.pk),
        "pause": lambda: wave_pause(actor=user, wave_id=wave.pk),
        "resume": lambda: wave_resume(actor=user, wave_id=wave.pk),
        "retry_member": lambda: wave_member_retry(actor=user, member_id=member.pk),
        "rollback": lambda: wave_rollback_create(actor=user, wave_id=wave.pk),
        "clone": lambda: wave_clone(actor=user, wave_id=wave.pk),
    }
    calls[action]()


class _Undo(Exception):
    """Rolls the savepoint back after a service call succeeded, so every call starts from the same state."""


def _outcome(call) -> str | None:
    """None when the call succeeds (its changes undone), else the service's refusal."""
    try:
        with transaction.atomic():
            call()
            raise _Undo
    except _Undo:
        return None
    except SoaError as exc:
        return str(exc)


@pytest.mark.parametrize("state", list(STATES))
def test_the_selector_agrees_with_the_services(people, state):
    build, creator_may = STATES[state]
    wave_id = build(people).pk
    spare = make_mailbox("Sid Spare")  # in Sales: inside every wave builder's scope
    disagreements = []
    for who in USERS:
        actions = wave_actions(user=people[who], wave=PilotWave.objects.get(pk=wave_id))
        assert set(actions) == set(WAVE_ACTIONS)
        if who == "op":
            assert {name for name, allowed in actions.items() if allowed} == creator_may
        for name, allowed in actions.items():
            wave = PilotWave.objects.get(pk=wave_id)
            if name == "retry_member" and not wave.members.exists():
                continue  # no member to name in the call
            refusal = _outcome(lambda name=name, wave=wave, who=who: _call(name, people[who], wave, spare))
            if (allowed.allowed, allowed.reason) != (refusal is None, refusal or ""):
                disagreements.append((who, name, allowed, refusal))
    assert disagreements == []


def test_refusal_kinds_decide_what_a_page_explains(people):
    wave = _approved(people)
    sales = wave_actions(user=people["sales_op"], wave=wave)
    assert not sales["start"] and sales["start"].shown  # a rule (the scope): worth saying
    assert "1 member is outside your scope for running waves" in sales["start"].reason
    assert not sales["resume"].shown  # the wave is not paused: nothing to explain
    assert not wave_actions(user=people["auditor"], wave=wave)["cancel"].shown  # the role never allows it
    assert wave_actions(user=people["op"], wave=wave, only=["start"]) == {"start": Allowed(allowed=True)}


# -- the pages show the selector's reasons ---------------------------------------------------------------------


def test_the_wave_page_shows_why_an_action_is_refused(client, people):
    wave = _approved(people)
    reason = wave_actions(user=people["sales_op"], wave=wave)["start"].reason
    page = page_text(signed_in(client, people["sales_op"]).get(reverse("wave_detail", args=[wave.pk])))
    assert f'data-testid="run-refusal">{escape(reason)}<' in page
    assert reverse("wave_start", args=[wave.pk]) not in page


def test_the_page_explains_a_withheld_submission_and_rollback(client, people):
    draft = new_wave(people["op"], name="Empty")
    signed_in(client, people["op"])
    page = page_text(client.get(reverse("wave_detail", args=[draft.pk])))
    reason = wave_actions(user=people["op"], wave=draft)["submit"].reason
    assert "has no members" in reason and f'data-testid="submit-refusal">{escape(reason)}<' in page
    assert reverse("wave_submit", args=[draft.pk]) not in page
    finished = _with_open_rollback(people)
    page = page_text(client.get(reverse("wave_detail", args=[finished.pk])))
    reason = wave_actions(user=people["op"], wave=finished)["rollback"].reason
    assert "already has an open rollback" in reason and escape(reason) in page


def test_a_confirmation_page_says_why_the_step_cannot_be_taken_now(client, people):
    wave = _approved(
        people, window_start=timezone.now() + dt.timedelta(hours=5), window_end=timezone.now() + dt.timedelta(hours=7)
    )
    response = signed_in(client, people["op"]).get(reverse("wave_start", args=[wave.pk]))
    reason = wave_actions(user=people["op"], wave=wave)["start"].reason
    assert response.status_code == 200 and "only inside its schedule window" in reason
    assert f'data-testid="confirm-refusal">{escape(reason)}<' in page_text(response)
    assert "Start the wave</button>" not in page_text(response)


def test_the_approver_page_shows_the_scope_refusal(client, people):
    wave = wave_submit(
        actor=people["op"],
        wave_id=new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE)).pk,
    )
    page = page_text(signed_in(client, people["sales_approver"]).get(reverse("wave_detail", args=[wave.pk])))
    reason = wave_actions(user=people["sales_approver"], wave=wave)["approve"].reason
    assert "outside your approval scope" in reason and escape(reason) in page
    assert 'data-testid="approve-form"' not in page and 'data-testid="reject-form"' not in page
