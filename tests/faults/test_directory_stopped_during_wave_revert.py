"""The directory (slapd) stopped for OUTAGE_SECONDS (60 s, the issue's figure) in the middle of a rollback wave, whose
every member first copies its cloud values into AD: the members it meets wait and are tried again on the runner's own
schedule, the wave completes by itself once slapd is back on the same port and data, each mailbox flipped back once,
AD holding every cloud value (nothing half-written: the sync that follows changes nothing in the cloud), one
``member_done`` each, and the audit chain intact. Real components: a private slapd stopped and started, the Exchange
Online emulator, the test database, Redis, RQ's worker with its scheduler; the clock of tests/faults/fault_stack.py
lets the retry delays pass without waiting for them (the outage is measured on it, retry for retry).
"""

import os
import uuid

import pytest

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.wave_rollback import wave_rollback_create
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from soa.values import exo_values
from tests.faults.fault_stack import Event, VirtualClock, empty_queues, import_inventory, tenant_for, work
from tests.soa.test_wave_support import cast, new_wave, set_mailbox_calls
from writeback.directory import DirectoryClient, DirectoryConfig
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient
from writeback.jobs.lifecycle import MEMBER_RETRY

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE_SECONDS = float(os.environ.get("FAULT_OUTAGE_SECONDS", "60"))  # on the fault clock; the real wait is seconds
MEMBERS = 6
_VOLATILE = {"WhenChangedUTC", "IsExchangeCloudManaged"}


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    with tenant_for(tmp_path_factory.mktemp("revert") / "slapd", users=MEMBERS + 8, seed=83) as tenant:
        yield tenant


@pytest.fixture
def stack(tenant, settings):
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed and the first wave have just written every mailbox
    empty_queues()
    tenant.exchange.clear_faults()
    import_inventory()
    yield tenant
    if not tenant.directory_running:
        tenant.start_directory()


def run_wave(people, wave: PilotWave) -> PilotWave:
    wave_submit(actor=wave.created_by, wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    return wave_start(actor=people["op2"], wave_id=wave.pk)


def comparable(mailbox: dict) -> dict:
    values = {name: value for name, value in exo_values(mailbox).items() if name not in _VOLATILE}
    return {name: sorted(value) if isinstance(value, list) else value for name, value in values.items()}


def test_directory_stopped_for_a_minute_during_a_wave_revert_the_wave_completes_by_itself_losing_nothing(
    stack, make_user
):
    people = cast(make_user)
    movable = Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True)
    mailboxes = list(movable.filter(recipient_type_details="UserMailbox").order_by("upn")[:MEMBERS])
    assert len(mailboxes) == MEMBERS
    out = run_wave(people, new_wave(people["op"], *mailboxes, name="Out", batch_size=MEMBERS, max_rate=50.0))
    work()
    out.refresh_from_db()
    assert out.state == WaveState.COMPLETED

    exo = ExchangeOnlineClient(ExchangeConfig.from_settings())
    for index, mailbox in enumerate(mailboxes):  # edits that exist only in the cloud: the copy must carry them
        domain = mailbox.primary_smtp.partition("@")[2]
        exo.set_mailbox(
            str(mailbox.exo_object_id), verify=True, CustomAttribute5=f"cloud-only {index}",
            EmailAddresses={"Add": [f"smtp:outage-{uuid.uuid4().hex[:8]}@{domain}"]},
        )  # fmt: skip
    before = {m.upn: comparable(exo.get_mailbox(str(m.exo_object_id))) for m in mailboxes}
    sets_before = set_mailbox_calls(stack.exchange)

    back = run_wave(people, wave_rollback_create(actor=people["op"], wave_id=out.pk))
    PilotWave.objects.filter(pk=back.pk).update(batch_size=2)
    work(max_jobs=1)  # the first batch: two members copied and flipped back
    assert WaveMember.objects.filter(wave=back, state=MemberState.DONE).count() == 2

    stack.stop_directory()
    clock = VirtualClock()
    clock.run(
        lambda: PilotWave.objects.get(pk=back.pk).state not in (WaveState.RUNNING,),
        events=[Event(OUTAGE_SECONDS, stack.start_directory)],
    )

    back.refresh_from_db()
    members = list(WaveMember.objects.filter(wave=back))
    assert back.state == WaveState.COMPLETED, [(m.state, m.attempts, m.last_error) for m in members]
    assert all(m.state == MemberState.DONE and m.attempts <= MEMBER_RETRY.max_attempts for m in members)
    assert clock.now() >= OUTAGE_SECONDS  # the work waited the outage out
    assert max(m.attempts for m in members) >= 3  # and was tried again while slapd was down, on the runner's schedule
    released = AuditEvent.objects.filter(action__in=["soa.wave.member_released", "soa.wave.batch_released"])
    assert any("Copying the cloud values into AD failed" in (e.reason or "") for e in released)  # it met the outage
    assert set_mailbox_calls(stack.exchange) - sets_before == MEMBERS  # each flipped back once, none twice
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done", object_id__in=[str(m.pk) for m in members]))
    assert sorted(e.object_id for e in done) == sorted(str(m.pk) for m in members)

    stack.exchange.sync()  # Entra Connect: AD's values over the cloud's, now that AD is the authority again
    with DirectoryClient(DirectoryConfig.from_settings()) as directory:
        for index, mailbox in enumerate(mailboxes):
            after = exo.get_mailbox(str(mailbox.exo_object_id))
            assert after["IsExchangeCloudManaged"] is False
            assert comparable(after) == before[mailbox.upn]  # nothing lost, nothing half-copied
            assert directory.read_exchange_attributes(mailbox.ad_guid)["extensionAttribute5"] == f"cloud-only {index}"
    assert verify_chain()[1] is None
