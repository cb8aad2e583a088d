"""Each role's dashboard shows what awaits that person, counted for real, each count linking to the list it counts:
approvers the waves awaiting their decision ("1 of 2 approvals", expiring soon) and those they approved that wait for
others; operators their own open waves with progress; help desk their own open and recent edits; auditors and admins
the audit chain's last verification and the last import."""

import datetime as dt

import pytest
from django.utils import timezone

from portal.audit import audit_record
from soa.choices import ChangeRoute, ChangeState, MemberState
from soa.models import ChangeRequest, PilotWave
from soa.services.approvals import wave_approve
from tests.soa.test_wave_support import cast, make_mailbox, new_wave, page_text, signed_in, submitted_wave
from writeback.models import InventoryRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def test_an_approver_sees_the_waves_awaiting_their_decision_with_approvals_so_far_and_expiry(client, people):
    soon = submitted_wave(people["op"], make_mailbox("Soon One"), name="Closing soon", required_approvals=2)
    PilotWave.objects.filter(pk=soon.pk).update(approval_expires_at=timezone.now() + dt.timedelta(hours=3))
    later = submitted_wave(people["op2"], make_mailbox("Later One"), name="Plenty of time", required_approvals=2)
    wave_approve(actor=people["approver2"], wave_id=later.pk)
    new_wave(people["op"], make_mailbox("Draft One"), name="Still a draft")

    response = signed_in(client, people["approver"]).get("/")

    approver = response.context["approver"]
    assert [wave.name for wave in approver["awaiting"]] == ["Closing soon", "Plenty of time"]  # soonest first
    assert approver["awaiting_count"] == 2 and approver["expiring_count"] == 1
    assert [(w.approvals_given, w.required_approvals) for w in approver["awaiting"]] == [(0, 2), (1, 2)]
    assert "1 of 2" in page_text(response) and "Still a draft" not in page_text(response)


def test_a_wave_the_approver_approved_moves_to_waiting_for_others_and_leaves_their_queue(client, people):
    wave = submitted_wave(people["op"], make_mailbox("Quorum One"), name="Needs two", required_approvals=2)
    wave_approve(actor=people["approver"], wave_id=wave.pk)

    approver = signed_in(client, people["approver"]).get("/").context["approver"]
    assert approver["awaiting"] == [] and [w.name for w in approver["decided"]] == ["Needs two"]
    other = signed_in(client, people["approver2"]).get("/").context["approver"]
    assert [w.name for w in other["awaiting"]] == ["Needs two"] and other["decided"] == []


def test_an_operator_sees_their_own_open_waves_with_progress_and_counts_linking_to_their_list(client, people):
    mine = new_wave(people["op"], make_mailbox("Mine A"), make_mailbox("Mine B"), name="Olga's pilot")
    mine.members.filter(mailbox__display_name="Mine A").update(state=MemberState.DONE)
    new_wave(people["op2"], make_mailbox("Theirs"), name="Oscar's pilot")

    response = signed_in(client, people["op"]).get("/")

    operator = response.context["operator"]
    assert [wave.name for wave in operator["waves"]] == ["Olga's pilot"]
    assert operator["by_state"] == [{"state": "DRAFT", "label": "Draft", "count": 1}]
    assert "1 of 2 done" in page_text(response)
    link = "/waves/?state=DRAFT&amp;mine=on"
    assert link in page_text(response)
    listed = client.get("/waves/", {"state": "DRAFT", "mine": "on"})
    assert "Olga&#x27;s pilot" in page_text(listed) and "Oscar" not in page_text(listed)


def _change(user, mailbox, state, minutes_ago=0):
    return ChangeRequest.objects.create(
        mailbox=mailbox, requested_by=user, created_at=timezone.now() - dt.timedelta(minutes=minutes_ago),
        operations=[], desired={"CustomAttribute1": "x"}, base_version=mailbox.version, state=state,
        route=ChangeRoute.EXO_THEN_AD, idempotency_key=f"{user.pk}-{mailbox.pk}-{state}",
    )  # fmt: skip


def test_help_desk_sees_their_own_open_and_recent_edits_not_other_peoples(client, people, make_user):
    other = make_user("hilda", "helpdesk")
    pending = _change(people["helpdesk"], make_mailbox("Waiting Approval"), ChangeState.PENDING_APPROVAL, 1)
    applied = _change(people["helpdesk"], make_mailbox("Done Already"), ChangeState.APPLIED, 5)
    _change(other, make_mailbox("Someone Else"), ChangeState.PENDING_APPROVAL)

    response = signed_in(client, people["helpdesk"]).get("/")

    helpdesk = response.context["helpdesk"]
    assert helpdesk["open"] == [pending] and helpdesk["open_count"] == 1
    assert helpdesk["recent"] == [pending, applied]
    assert "Someone Else" not in page_text(response)
    assert f"/mailboxes/{pending.mailbox_id}/changes/" in page_text(response)


def test_an_auditor_sees_the_chain_s_last_verification_and_the_last_import(client, make_user):
    from django.db import transaction

    auditor = make_user("audrey", "auditor")
    page = signed_in(client, auditor).get("/")
    assert "has not been verified from the portal yet" in page_text(page)
    assert "No import has run yet" in page_text(page)

    with transaction.atomic():
        audit_record(actor=None, action="portal.audit.verified", object_type="audit",
                     after={"checked": 42, "broken_at": None, "summary": "intact"})  # fmt: skip
    InventoryRun.objects.create(state=InventoryRun.State.DONE, finished_at=timezone.now())
    page = client.get("/")
    assert "Chain intact: 42 events" in page_text(page)
    assert page.context["tenant"]["last_done"] is not None and "none yet" not in page_text(page)


def test_an_admin_does_not_get_role_parts_they_do_not_hold(client, make_user):
    response = signed_in(client, make_user("adam", "admin")).get("/")
    assert not {"approver", "operator", "helpdesk"} & set(response.context.keys())
