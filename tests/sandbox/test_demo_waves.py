"""The demo's pilot waves, built against a seeded directory and Exchange Online emulator of this module's own,
with the demo accounts the demo creates: one completed (flipped in Exchange by the real runner), one awaiting
approval, one draft; a second call adds nothing."""

import django_rq
import pytest
from django.core.management import call_command

from portal.audit import verify_chain
from portal.models import AuditEvent
from sandbox.demo_waves import DemoPeople, demo_waves_create
from soa.choices import Authority, MemberState, WaveState
from soa.models import Approval, Mailbox, PilotWave, WaveMember
from tests.exchange_fixtures import private_tenant
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun
from writeback.wave_jobs import QUEUE

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=200, seed=5) as (directory, exchange, _report):
        yield directory, exchange


@pytest.fixture
def demo(tenant, settings, tmp_path):
    """The state `make demo` reaches before its waves: inventory imported, demo accounts created."""
    directory, exchange = tenant
    exchange.reset()
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # as in the demo: the tenant was created moments ago
    queue = django_rq.get_queue(QUEUE)
    queue.empty()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    call_command(
        "demo_accounts", logins_file=str(tmp_path / "logins.json"), helpdesk_scope=[f"OU=Sales,{directory.users_dn}"]
    )
    yield exchange
    queue.empty()  # the batches the runner queued, already run here
    exchange.reset()


def test_the_demo_has_one_completed_wave_one_awaiting_approval_and_one_draft(demo):
    exchange = demo
    said: list[str] = []
    created = demo_waves_create(completed=6, awaiting=5, draft=3, say=said.append)

    assert len(created) == 3 and len(said) == 3
    assert sorted(PilotWave.objects.values_list("state", flat=True)) == sorted(
        [WaveState.COMPLETED, WaveState.SUBMITTED, WaveState.DRAFT]
    )
    completed = PilotWave.objects.get(state=WaveState.COMPLETED)
    members = list(WaveMember.objects.filter(wave=completed).select_related("mailbox"))
    assert len(members) == 6 and {m.state for m in members} == {MemberState.DONE}
    for member in members:
        assert exchange.get_mailbox(str(member.mailbox.exo_object_id))["IsExchangeCloudManaged"] is True
        assert member.mailbox.authority == Authority.CLOUD
    assert "moved to Exchange Online" in said[0] and completed.name in said[0]

    # Four-eyes: the approver neither created, filled nor submitted it; the operator started it.
    approval = Approval.objects.get(wave=completed)
    people = DemoPeople()
    assert approval.approver.username == people.approver
    assert completed.created_by.username == completed.submitted_by.username == people.operator
    started = AuditEvent.objects.get(action="soa.wave.started", object_id=str(completed.pk))
    assert started.actor.username == people.operator
    assert AuditEvent.objects.filter(action="soa.wave.member_done").count() == 6

    # The incremental import after the run read the flips back from Exchange Online.
    last = InventoryRun.objects.order_by("-pk").first()
    assert last.mode == InventoryRun.Mode.INCREMENTAL and last.state == InventoryRun.State.DONE
    assert all(m.exo_read_at > completed.finished_at for m in Mailbox.objects.filter(wave_memberships__wave=completed))

    submitted = PilotWave.objects.get(state=WaveState.SUBMITTED)
    assert submitted.preflight_report["summary"]["members"] == 5
    assert submitted.members.filter(state=MemberState.PENDING).count() == 5
    assert not submitted.approvals.exists()
    draft = PilotWave.objects.get(state=WaveState.DRAFT)
    assert draft.members.count() == 3 and draft.submitted_by is None

    ids = [set(wave.members.values_list("mailbox_id", flat=True)) for wave in (completed, submitted, draft)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])  # distinct mailboxes
    assert verify_chain()[1] is None

    events = AuditEvent.objects.count()
    again: list[str] = []
    assert demo_waves_create(completed=6, awaiting=5, draft=3, say=again.append) == []
    assert PilotWave.objects.count() == 3 and AuditEvent.objects.count() == events
    assert again == ["Demo waves: 3 pilot wave(s) exist already; left as they are."]
