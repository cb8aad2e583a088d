"""Redis is down when a committed change queues its job: starting, resuming and retrying a member of a wave, a
help-desk edit ready to apply, a writeback task. Each change is saved and audited once with no 500; the wave page says
the wave waits for a worker; once Redis is back (empty) the sweep queues each piece of work exactly once, and the wave
then runs to the end with every mailbox flipped once. Real components: a private redis-server stopped and started,
the database (the on-commit callbacks run for real: transactional tests), the Exchange Online emulator, RQ's worker.
"""

import datetime as dt
import uuid

import django_rq
import pytest
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa import jobs
from soa.choices import Authority, ChangeState, MemberState, WaveState
from soa.models import ChangeRequest, Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.changes import change_request_create
from soa.services.wave_run import wave_pause, wave_start
from soa.services.waves import wave_submit
from tests.exchange_fixtures import private_tenant
from tests.soa.test_wave_support import cast, make_mailbox, new_wave, set_mailbox_calls
from writeback.inventory import inventory_run_request
from writeback.jobs.changes import change_request_sweep
from writeback.jobs.inventory import claim, execute, inventory_sweep
from writeback.jobs.waves import wave_sweep_job
from writeback.jobs.writeback import writeback_sweep
from writeback.models import InventoryRun, WritebackTask
from writeback.tasks import writeback_task_request

pytestmark = pytest.mark.django_db(transaction=True)

MEMBERS = 6


@pytest.fixture
def people(make_user):
    return cast(make_user)


def queued(func: str, queue_name: str = jobs.QUEUE) -> list:
    """The first arguments of the jobs running ``func`` waiting in ``queue_name``."""
    queue = django_rq.get_queue(queue_name)
    found = [queue.fetch_job(job_id) for job_id in queue.get_job_ids() + queue.scheduled_job_registry.get_job_ids()]
    return [job.args[0] for job in found if job is not None and job.func_name == func]


def idle_for(wave: PilotWave, minutes: float) -> None:
    """Make the wave look untouched for ``minutes``, as if that much time had passed since it was last started."""
    then = timezone.now() - dt.timedelta(minutes=minutes)
    PilotWave.objects.filter(pk=wave.pk).update(updated_at=then, started_at=then)


def approved_wave(people, *mailboxes) -> PilotWave:
    wave = new_wave(people["op"], *mailboxes, batch_size=4, max_rate=50.0)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    return wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)


# -- a wave started while Redis is down, run to the end once it is back ----------------------------------------------


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=MEMBERS + 4, seed=53) as (_, exchange, _report):
        yield exchange


@pytest.fixture
def exchange(tenant, settings, private_redis):
    tenant.reset()
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    yield tenant
    tenant.reset()


def test_a_wave_started_while_redis_is_down_waits_for_a_worker_then_the_sweep_runs_it_once(
    exchange, people, private_redis, client
):
    mailboxes = list(Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True).order_by("upn"))
    mailboxes = mailboxes[:MEMBERS]
    assert len(mailboxes) == MEMBERS
    wave = approved_wave(people, *mailboxes)
    private_redis.stop()

    client.force_login(people["op2"])
    response = client.post(reverse("wave_start", args=[wave.pk]))
    assert response.status_code == 302  # the start was saved: no 500 for the job that could not be queued
    wave.refresh_from_db()
    assert wave.state == WaveState.RUNNING
    assert AuditEvent.objects.filter(action="soa.wave.started", object_id=str(wave.pk)).count() == 1

    idle_for(wave, 2)
    page = client.get(reverse("wave_detail", args=[wave.pk])).content.decode()
    assert 'data-testid="progress-waiting"' in page and "Waiting for a worker" in page

    private_redis.start()  # back, and empty: the batch that was never queued is nowhere in Redis
    assert queued(jobs.WAVE_RUN_JOB) == []
    wave_sweep_job()
    assert queued(jobs.WAVE_RUN_JOB) == [wave.pk]
    wave_sweep_job()  # its batch now waits in Redis: the sweep does not queue a second one
    assert queued(jobs.WAVE_RUN_JOB) == [wave.pk]

    queue = django_rq.get_queue(jobs.QUEUE)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    assert queue.failed_job_registry.count == 0
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED
    assert WaveMember.objects.filter(wave=wave, state=MemberState.DONE).count() == MEMBERS
    assert set_mailbox_calls(exchange) == MEMBERS  # every mailbox flipped, none twice
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done").values_list("object_id", flat=True))
    assert len(done) == len(set(done)) == MEMBERS
    page = client.get(reverse("wave_detail", args=[wave.pk])).content.decode()
    assert "progress-waiting" not in page
    assert verify_chain()[1] is None


# -- resume and member retry while Redis is down ----------------------------------------------------------------------


def test_resume_and_member_retry_while_redis_is_down_are_saved_and_queued_once_by_the_sweep(
    people, private_redis, client
):
    wave = approved_wave(people, make_mailbox("Ann Lee"), make_mailbox("Bob Ray"), make_mailbox("Cy Fox"))
    wave_start(actor=people["op"], wave_id=wave.pk)
    wave_pause(actor=people["op"], wave_id=wave.pk, reason="before the outage")
    django_rq.get_queue(jobs.QUEUE).empty()  # no worker ran the first batch: this test is about what comes after
    failed = WaveMember.objects.filter(wave=wave).order_by("pk").first()
    WaveMember.objects.filter(pk=failed.pk).update(state=MemberState.FAILED, attempts=5, last_error="gave up")
    private_redis.stop()

    client.force_login(people["op2"])
    assert client.post(reverse("wave_resume", args=[wave.pk])).status_code == 302
    assert client.post(reverse("wave_member_retry", args=[wave.pk, failed.pk])).status_code == 302
    wave.refresh_from_db()
    failed.refresh_from_db()
    assert wave.state == WaveState.RUNNING and failed.state == MemberState.PENDING
    assert AuditEvent.objects.filter(action="soa.wave.resumed", object_id=str(wave.pk)).count() == 1
    assert AuditEvent.objects.filter(action="soa.wave.member_retried", object_id=str(failed.pk)).count() == 1

    private_redis.start()
    wave_sweep_job()
    assert queued(jobs.WAVE_RUN_JOB) == []  # just resumed: a worker may yet take it, so the sweep waits
    idle_for(wave, 2)
    wave_sweep_job()
    wave_sweep_job()
    assert queued(jobs.WAVE_RUN_JOB) == [wave.pk]  # one batch, however often the sweep comes


# -- a help-desk edit and a writeback task while Redis is down --------------------------------------------------------


def test_an_edit_ready_to_apply_while_redis_is_down_is_queued_once_by_the_sweep(people, private_redis):
    mailbox = make_mailbox("Dee Poe")
    private_redis.stop()
    request = change_request_create(
        actor=people["helpdesk"], mailbox_id=mailbox.pk, reason="ticket 17", base_version=mailbox.version,
        operations=[{"op": "set_custom_attribute", "attribute": "CustomAttribute7", "value": "CC-17"}],
        idempotency_key=f"fault-{uuid.uuid4().hex}",
    )  # fmt: skip
    assert request.state == ChangeState.VALIDATED
    assert AuditEvent.objects.filter(action="soa.change.requested", object_id=str(request.pk)).count() == 1

    private_redis.start()
    change_request_sweep()
    assert queued(jobs.CHANGE_APPLY_JOB) == []  # just made: its job may still be on the way
    ChangeRequest.objects.filter(pk=request.pk).update(updated_at=timezone.now() - dt.timedelta(minutes=6))
    change_request_sweep()
    change_request_sweep()
    assert queued(jobs.CHANGE_APPLY_JOB) == [request.pk]


def test_a_writeback_task_requested_while_redis_is_down_is_queued_once_by_the_sweep(private_redis):
    mailbox = make_mailbox("Eve Orr", ad_guid=uuid.uuid4())
    private_redis.stop()
    task = writeback_task_request(mailbox_id=mailbox.pk, desired={"CustomAttribute3": "x"}, source="fault-test")
    assert task.state == WritebackTask.State.QUEUED

    private_redis.start()
    writeback_sweep(older_than_seconds=0)
    writeback_sweep(older_than_seconds=0)
    assert queued(jobs.WRITEBACK_TASK_JOB, jobs.WRITEBACK_QUEUE) == [task.pk]


def test_an_import_requested_while_redis_is_down_is_queued_once_by_the_sweep(private_redis):
    private_redis.stop()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL)
    assert run.state == InventoryRun.State.QUEUED and InventoryRun.objects.get(pk=run.pk).job_id == ""

    private_redis.start()
    inventory_sweep()
    assert queued(jobs.INVENTORY_RUN_JOB) == []  # just asked for: its job may still be on the way
    InventoryRun.objects.filter(pk=run.pk).update(requested_at=timezone.now() - dt.timedelta(minutes=6))
    inventory_sweep()
    inventory_sweep()
    assert queued(jobs.INVENTORY_RUN_JOB) == [run.pk]  # queued once, so the one-at-a-time rule does not block forever
