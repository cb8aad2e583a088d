"""The wave state machine: the table itself, and every service against every state (allowed, or refused and why)."""

import pytest

from soa.choices import (
    MEMBER_TRANSITIONS,
    WAVE_CLAIMING_STATES,
    WAVE_OPEN_STATES,
    WAVE_TERMINAL_STATES,
    WAVE_TRANSITIONS,
    MemberState,
    WaveState,
)
from soa.models import PilotWave
from soa.services import SoaError
from soa.services.approvals import wave_approve, wave_reject
from soa.services.waves import wave_cancel, wave_submit, wave_withdraw
from tests.soa.test_wave_support import cast, events, make_mailbox, submitted_wave


@pytest.fixture
def people(make_user):
    return cast(make_user)


def test_the_table_covers_every_state_and_reads_as_designed():
    assert set(WAVE_TRANSITIONS) == set(WaveState)
    assert {"REJECTED", "COMPLETED", "COMPLETED_WITH_ERRORS", "CANCELLED"} == WAVE_TERMINAL_STATES
    assert set(WaveState) == WAVE_OPEN_STATES | WAVE_TERMINAL_STATES and not WAVE_OPEN_STATES & WAVE_TERMINAL_STATES
    assert {"SUBMITTED", "APPROVED", "RUNNING", "PAUSED"} == WAVE_CLAIMING_STATES
    assert WAVE_TRANSITIONS[WaveState.RUNNING] == {"PAUSED", "COMPLETED", "COMPLETED_WITH_ERRORS"}
    assert WAVE_TRANSITIONS[WaveState.PAUSED] == {"RUNNING", "CANCELLED"}
    # every state is reachable from a draft
    reached, frontier = {WaveState.DRAFT}, [WaveState.DRAFT]
    while frontier:
        for nxt in WAVE_TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(WaveState)


def test_member_table():
    assert set(MEMBER_TRANSITIONS) == set(MemberState)
    assert MEMBER_TRANSITIONS[MemberState.PENDING] == {"RUNNING", "SKIPPED"}
    assert MEMBER_TRANSITIONS[MemberState.RUNNING] == {"DONE", "FAILED", "SKIPPED", "PENDING"}
    assert not MEMBER_TRANSITIONS[MemberState.DONE]


# service -> (target state, call, audit action, refusal for a state it cannot leave)
SERVICES = {
    "submit": (WaveState.SUBMITTED, lambda p, pk: wave_submit(actor=p["op"], wave_id=pk), "soa.wave.submitted",
               "only draft waves can be submitted"),
    "approve": (WaveState.APPROVED, lambda p, pk: wave_approve(actor=p["approver"], wave_id=pk), "soa.wave.approved",
                "only submitted waves can be approved or rejected"),
    "reject": (WaveState.REJECTED, lambda p, pk: wave_reject(actor=p["approver"], wave_id=pk, reason="no"),
               "soa.wave.rejected", "only submitted waves can be approved or rejected"),
    "withdraw": (WaveState.DRAFT, lambda p, pk: wave_withdraw(actor=p["op"], wave_id=pk), "soa.wave.withdrawn",
                 "only submitted waves can be withdrawn to draft"),
    "cancel": (WaveState.CANCELLED, lambda p, pk: wave_cancel(actor=p["op"], wave_id=pk, reason="stop"),
               "soa.wave.cancelled", "only draft, submitted, approved or paused waves can be cancelled"),
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("state", list(WaveState))
@pytest.mark.parametrize("service", list(SERVICES))
def test_every_service_obeys_the_transition_table(people, service, state):
    target, call, action, refusal = SERVICES[service]
    wave = submitted_wave(people["op2"], make_mailbox("Ann Archer"))
    PilotWave.objects.filter(pk=wave.pk).update(state=state)
    audited = len(events(action, wave))
    if target in WAVE_TRANSITIONS[state]:
        assert call(people, wave.pk).state == target
        (event,) = events(action, wave)[audited:]
        assert (event.before["state"], event.after["state"]) == (state, target)
        return
    if service == "cancel" and state == WaveState.RUNNING:
        refusal = "is running; pause it first"
    with pytest.raises(SoaError) as refused:
        call(people, wave.pk)
    assert f"“Pilot 1” is {WaveState(state).label.lower()}" in str(refused.value)
    assert refusal in str(refused.value)
    assert PilotWave.objects.get(pk=wave.pk).state == state
    assert len(events(action, wave)) == audited
