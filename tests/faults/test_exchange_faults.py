"""Exchange Online misbehaving while a wave runs and help-desk edits are applied, end to end: answering 5xx for a
minute, a 429 storm with Retry-After for a minute, error-after-success (every write applied, then answered with an
empty 500), and replication-lag 404s for a minute. In each case, once the fault clears, the wave completes with every
mailbox flipped and every edit is in Exchange and in AD; each flip and each edit was carried out by Exchange exactly
once (the emulator counts the writes it carried out, apart from the requests it failed before running them), one audit
event of each end per member, request and writeback task, and the chain verifies.

Microsoft's word for each fault (shared/reference/exchange-facts.md): §4.3, a cmdlet may report an error after it
applied the change, so the caller re-reads before declaring failure, and an object can answer 404 for a while after a
write (replication lag) and is to be asked again; §4.5, a 429 carries Retry-After, which is to be honoured; 5xx are
transient. The unit-level cases (one 503, one Retry-After, one error-after-success of one flip) are in
tests/writeback/test_wave_jobs.py, test_wave_deferral.py, test_exchange_client.py; these are the whole flows under a
minute of the fault. Real components: a private directory and emulator, the test database, Redis, RQ's worker with
its scheduler; the clock of tests/faults/fault_stack.py lets the retry delays pass (the minute is measured on it).
"""

import datetime as dt
import re
import uuid

import pytest

from portal.audit import verify_chain
from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, ChangeState, WaveState
from soa.models import ChangeRequest, Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.changes import change_request_create
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from tests.exchange_fixtures import private_tenant
from tests.faults.fault_stack import Event, VirtualClock, cloud_managed, empty_queues, import_inventory
from tests.soa.test_wave_support import cast, new_wave
from tests.writeback.test_change_apply import read_ad
from writeback.models import WritebackTask

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_SECONDS = 60.0  # "for a minute", on the clock
FLIPS = 3
EDITS = 2
USERS = 40
_USED: set[str] = set()  # mailboxes an earlier test of the module used (the tenant outlives each test's database)


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=USERS, seed=97) as (directory, exchange, _report):
        cloud_managed(exchange, USERS // 3)
        yield directory, exchange


@pytest.fixture
def stack(tenant, settings, make_user):
    directory, exchange = tenant
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    empty_queues()
    exchange.clear_faults()
    exchange.set_throttle(rate=None)
    import_inventory()
    yield directory, exchange, {**cast(make_user), "help": make_user("hilda", Role.HELPDESK)}
    exchange.clear_faults()
    exchange.set_throttle(rate=None)


def unused(authority: str, count: int) -> list[Mailbox]:
    found = list(
        Mailbox.objects.filter(authority=authority, in_exo=True, in_ad=True, has_drift=False)
        .filter(recipient_type_details="UserMailbox")
        .exclude(ad_guid=None)
        .exclude(upn__in=_USED)
        .order_by("upn")[:count]
    )
    assert len(found) == count, "the tenant has run out of unused mailboxes"
    _USED.update(m.upn for m in found)
    return found


class Work:
    """A wave of FLIPS mailboxes to the cloud, started, and EDITS help-desk edits of cloud mailboxes, asked for."""

    def __init__(self, exchange, people):
        self.exchange = exchange
        self.flipped = unused(Authority.ON_PREM, FLIPS)
        wave = new_wave(people["op"], *self.flipped, name=f"Fault {uuid.uuid4().hex[:6]}", batch_size=2, max_rate=50.0)
        wave_submit(actor=people["op"], wave_id=wave.pk)
        wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
        self.wave = wave_start(actor=people["op2"], wave_id=wave.pk)
        self.edited = unused(Authority.CLOUD, EDITS)
        self.aliases = {m.pk: f"fault-{uuid.uuid4().hex[:6]}@{m.primary_smtp.partition('@')[2]}" for m in self.edited}
        self.requests = [
            change_request_create(
                actor=people["help"], mailbox_id=m.pk, reason="ticket 5xx", base_version=m.version,
                operations=[{"op": "add_alias", "address": self.aliases[m.pk]},
                            {"op": "set_custom_attribute", "attribute": "CustomAttribute6", "value": "fault"}],
                idempotency_key=f"fault-{uuid.uuid4().hex}",
            )
            for m in self.edited
        ]  # fmt: skip
        self.carried_out = self._carried_out()
        self.counters = exchange.counters()

    def answered(self, status: str) -> int:
        """How many requests Exchange answered with ``status`` since the work was asked for."""
        return self.exchange.counters()["by_status"].get(status, 0) - self.counters["by_status"].get(status, 0)

    def _carried_out(self) -> int:
        return self.exchange.counters()["carried_out"].get("Set-Mailbox", 0)

    def done(self) -> bool:
        open_requests = ChangeRequest.objects.filter(pk__in=[r.pk for r in self.requests]).exclude(
            state__in=[ChangeState.APPLIED, ChangeState.FAILED]
        )
        open_tasks = WritebackTask.objects.exclude(state__in=[WritebackTask.State.DONE, WritebackTask.State.FAILED])
        wave_open = PilotWave.objects.get(pk=self.wave.pk).state == WaveState.RUNNING
        return not (wave_open or open_requests.exists() or open_tasks.exists())

    def assert_complete_and_each_write_once(self, directory) -> None:
        self.wave.refresh_from_db()
        members = list(WaveMember.objects.filter(wave=self.wave))
        assert self.wave.state == WaveState.COMPLETED, [(m.state, m.attempts, m.last_error) for m in members]
        for mailbox in self.flipped:
            assert self.exchange.get_mailbox(str(mailbox.exo_object_id))["IsExchangeCloudManaged"] is True
        requests = list(ChangeRequest.objects.filter(pk__in=[r.pk for r in self.requests]))
        assert all(r.state == ChangeState.APPLIED for r in requests), [(r.state, r.error) for r in requests]
        for mailbox in self.edited:
            alias = f"smtp:{self.aliases[mailbox.pk]}".lower()
            cloud = self.exchange.get_mailbox(str(mailbox.exo_object_id))
            assert [a.lower() for a in cloud["EmailAddresses"]].count(alias) == 1
            assert cloud["CustomAttribute6"] == "fault"
            ad = read_ad(directory, mailbox, "proxyAddresses", "extensionAttribute6")
            assert [a.lower() for a in ad["proxyAddresses"]].count(alias) == 1
            assert ad["extensionAttribute6"] == ["fault"]
        # Each flip and each edit carried out by Exchange once: a retry after a failure re-read first and sent nothing.
        assert self._carried_out() - self.carried_out == FLIPS + EDITS
        for member in members:
            assert AuditEvent.objects.filter(action="soa.wave.member_done", object_id=str(member.pk)).count() == 1
        for request in requests:
            assert AuditEvent.objects.filter(action="soa.change.applied", object_id=str(request.pk)).count() == 1
        tasks = list(WritebackTask.objects.all())
        assert len(tasks) == EDITS and all(t.state == WritebackTask.State.DONE for t in tasks)
        for task in tasks:
            assert AuditEvent.objects.filter(action="writeback.task.completed", object_id=str(task.pk)).count() == 1
        assert verify_chain()[1] is None


def reasons() -> str:
    """Every release and retry the audit log recorded, as one text to search."""
    actions = ["soa.wave.member_released", "soa.wave.batch_released", "soa.change.released"]
    return "\n".join(e.reason or "" for e in AuditEvent.objects.filter(action__in=actions))


def test_exchange_answering_5xx_for_a_minute_the_wave_and_the_edits_complete_once_it_clears(stack, settings):
    directory, exchange, people = stack
    # The client's own retries inside one call (real sleeps, up to ~15 s a call with 6 attempts) only shorten what the
    # runner and the apply job see; two keep the minute about their retries, which are what this fault tests.
    settings.EXO_MAX_ATTEMPTS = 2
    work = Work(exchange, people)
    exchange.set_faults(error_rate=1.0, error_status=503, seed=1)
    clock = VirtualClock()
    clock.run(work.done, events=[Event(FAULT_SECONDS, exchange.clear_faults)])
    assert clock.now() >= FAULT_SECONDS
    assert work.answered("503") >= 4  # the fault was met, by both kinds of work
    assert "ExoTransient" in reasons()
    work.assert_complete_and_each_write_once(directory)


def test_exchange_429_storm_with_retry_after_the_wave_and_the_edits_complete_honouring_it(stack, settings):
    directory, exchange, people = stack
    settings.EXO_RATE_LIMIT_PACING = False  # let the storm happen rather than pacing before it
    settings.EXO_MAX_RETRY_AFTER_SECONDS = 1  # a longer Retry-After is waited out by the scheduler, not in the worker
    work = Work(exchange, people)
    exchange.set_throttle(rate=0.05, burst=2)  # two requests, then a token every 20 s: Retry-After up to 20
    clock = VirtualClock()
    clock.run(work.done, events=[Event(FAULT_SECONDS, lambda: exchange.set_throttle(rate=None))])
    assert clock.now() >= FAULT_SECONDS
    assert work.answered("429") >= 2
    assert "asked to retry after" in reasons()
    work.assert_complete_and_each_write_once(directory)
    # Every edit put down by a Retry-After was tried again no earlier than Exchange asked (a wave's member: see
    # test_wave_deferral): an earlier try would only earn another 429.
    asked = AuditEvent.objects.filter(action="soa.change.released", reason__contains="asked to retry after")
    assert asked.exists()
    for event in asked:
        wanted = dt.datetime.strptime(re.search(r"\(at ([0-9-]+ [0-9:]+) UTC\)", event.reason)[1], "%Y-%m-%d %H:%M:%S")
        assert dt.datetime.fromisoformat(event.after["retry_at"]) >= wanted.replace(tzinfo=dt.UTC), event.reason


def test_exchange_error_after_success_every_write_is_applied_once_and_recorded_done(stack):
    directory, exchange, people = stack
    work = Work(exchange, people)
    exchange.set_faults(error_after_apply=FLIPS + EDITS)  # every write applied, then answered with an empty 500
    VirtualClock().run(work.done)
    assert work.answered("500") == FLIPS + EDITS  # each write met the fault
    work.assert_complete_and_each_write_once(directory)


def test_exchange_replication_lag_404s_for_a_minute_the_wave_and_the_edits_complete_once_found(stack):
    directory, exchange, people = stack
    work = Work(exchange, people)
    exchange.set_faults(replication_lag=10**12)  # every mailbox "just written": Identity lookups answer 404
    clock = VirtualClock()
    clock.run(work.done, events=[Event(FAULT_SECONDS, lambda: exchange.set_faults(replication_lag=0))])
    assert clock.now() >= FAULT_SECONDS
    assert work.answered("404") >= 2
    assert "404" in reasons()
    work.assert_complete_and_each_write_once(directory)
