"""Writeback batches against a private slapd, the test database and Redis: one job writes every due task with two
searches and a modify each, ends each task on its own (one refused or missing user fails alone, an outage gives every
unfinished task back), queues a follow-up when its batch was full, and a request that finds a job waiting queues none.
"""

import django_rq
import ldap3
import pytest

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa import jobs
from soa.models import Mailbox
from tests.writeback.writeback_support import cloud_mailbox, start_directory
from writeback.directory.batch import Item, write_many
from writeback.jobs import writeback as job
from writeback.models import WritebackTask
from writeback.tasks import writeback_enqueue, writeback_task_request

pytestmark = pytest.mark.django_db(transaction=True)

State = WritebackTask.State


@pytest.fixture(scope="module")
def ad(tmp_path_factory):
    directory = start_directory(tmp_path_factory.mktemp("writeback-batch-slapd"))
    yield directory
    directory.stop()


@pytest.fixture(autouse=True)
def _stack(ad, settings):
    if not ad.instance.is_running():
        ad.start()
    ad.point_settings(settings)
    queue = django_rq.get_queue(jobs.WRITEBACK_QUEUE)
    queue.empty()
    yield
    queue.empty()


def request(mailbox: Mailbox, *, enqueue: bool = False, **values) -> WritebackTask:
    mailbox.refresh_from_db()
    desired = {**mailbox.exo_values, **values}
    Mailbox.objects.filter(pk=mailbox.pk).update(exo_values=desired)
    return writeback_task_request(mailbox_id=mailbox.pk, desired=desired, source="manual", enqueue=enqueue)


def sent() -> dict[str, int]:
    return dict(job.directory_client().requests)


def test_one_job_writes_every_due_task_with_two_searches_and_a_modify_each(ad):
    mailboxes = [cloud_mailbox() for _ in range(5)]
    tasks = [request(mailbox, CustomAttribute3=f"batch {index}") for index, mailbox in enumerate(mailboxes)]
    before = sent()

    assert job.writeback_task_job(tasks[2].pk) == State.DONE
    after = sent()
    assert after["search"] - before.get("search", 0) == 2
    assert after["modify"] - before.get("modify", 0) == 5
    for index, (mailbox, task) in enumerate(zip(mailboxes, tasks, strict=True)):
        task.refresh_from_db()
        assert task.state == State.DONE and task.attempts == 1
        assert list(task.applied) == ["extensionAttribute3"]
        assert ad.read(mailbox.ad_guid, "extensionAttribute3") == {"extensionAttribute3": [f"batch {index}"]}
        mailbox.refresh_from_db()
        assert mailbox.ad_values["CustomAttribute3"] == f"batch {index}"
        # Each task's events carry its own correlation id, not the job's or another task's.
        ran = AuditEvent.objects.filter(object_id=str(task.pk), object_type="writeback.writebacktask").exclude(
            action="writeback.task.requested"
        )
        assert {(event.action, event.correlation_id) for event in ran} == {
            ("writeback.task.started", f"writeback-{task.pk}"),
            ("writeback.task.completed", f"writeback-{task.pk}"),
        }
    assert verify_chain()[1] is None


def test_a_task_waiting_for_its_scheduled_retry_is_not_taken_early_but_its_own_job_takes_it(ad):
    from django.utils import timezone

    waiting, due = cloud_mailbox(), cloud_mailbox()
    later = request(waiting, CustomAttribute3="later")
    WritebackTask.objects.filter(pk=later.pk).update(retry_at=timezone.now() + timezone.timedelta(minutes=5))
    now = request(due, CustomAttribute3="now")

    assert job.writeback_task_job(now.pk) == State.DONE
    assert WritebackTask.objects.get(pk=later.pk).state == State.QUEUED
    assert job.writeback_task_job(later.pk) == State.DONE  # delivered: its job takes it whatever its retry time


def test_a_missing_user_fails_alone_and_the_rest_of_the_batch_is_written(ad):
    gone, kept = cloud_mailbox(), cloud_mailbox()
    lost = request(gone, CustomAttribute3="nobody")
    written = request(kept, CustomAttribute3="somebody")
    server = ldap3.Server(ad.instance.url, get_info=ldap3.NONE)
    with ldap3.Connection(server, ad.instance.bind_dn, ad.instance.password, auto_bind=True) as conn:
        assert conn.delete(gone.dn), conn.result

    job.writeback_task_job(None)
    lost.refresh_from_db()
    assert lost.state == State.FAILED and f"objectGUID {gone.ad_guid}" in lost.error
    assert WritebackTask.objects.get(pk=written.pk).state == State.DONE
    assert ad.read(kept.ad_guid, "extensionAttribute3") == {"extensionAttribute3": ["somebody"]}


def test_the_directory_stopped_gives_every_task_of_the_batch_back_for_a_retry(ad):
    mailboxes = [cloud_mailbox() for _ in range(3)]
    tasks = [request(mailbox, CustomAttribute3="after the outage") for mailbox in mailboxes]
    ad.stop()
    try:
        assert job.writeback_task_job(tasks[0].pk) == State.QUEUED
        for task in tasks:
            task.refresh_from_db()
            assert task.state == State.QUEUED and task.attempts == 1 and task.retry_at is not None
            assert "unreachable" in task.error
        scheduled = django_rq.get_queue(jobs.WRITEBACK_QUEUE).scheduled_job_registry.get_job_ids()
        assert {task.job_id for task in tasks} <= set(scheduled)  # each retry scheduled, none slept on
    finally:
        ad.start()
    for task in tasks:  # delivered as the scheduler would, when each retry is due
        assert job.writeback_task_job(task.pk) == State.DONE
    for mailbox in mailboxes:
        assert ad.read(mailbox.ad_guid, "extensionAttribute3") == {"extensionAttribute3": ["after the outage"]}


def test_a_full_batch_queues_a_follow_up_and_a_request_finding_a_job_waiting_queues_none(ad, monkeypatch):
    monkeypatch.setattr(job, "BATCH", 2)
    queue = django_rq.get_queue(jobs.WRITEBACK_QUEUE)
    tasks = [request(cloud_mailbox(), CustomAttribute3=f"backlog {index}") for index in range(3)]

    first = writeback_enqueue(tasks[0].pk)
    assert first is not None
    assert writeback_enqueue(tasks[1].pk) is None and writeback_enqueue(tasks[2].pk) is None  # the job takes them
    queue.empty()

    assert job.writeback_task_job(tasks[0].pk) == State.DONE  # claimed two: a full batch
    assert [queued.args for queued in queue.jobs] == [(None,)]
    assert WritebackTask.objects.filter(pk__in=[t.pk for t in tasks], state=State.DONE).count() == 2
    assert job.writeback_task_job(None) is None  # the follow-up names no task; it writes the third
    assert WritebackTask.objects.filter(pk__in=[t.pk for t in tasks], state=State.DONE).count() == 3


def test_write_many_replans_a_user_edited_between_its_read_and_its_modify(ad):
    mailbox = cloud_mailbox()
    alias = "smtp:raced@corp.example.com"
    client = job.directory_client()

    edited = []

    def desired(observed):
        if not edited:  # just after the batch's read, someone adds the same alias in AD
            ad.edit(mailbox.ad_guid, {"proxyAddresses": [(ldap3.MODIFY_ADD, [alias])]})
            edited.append(True)
        return {"proxyAddresses": [*observed["proxyAddresses"], alias]}

    calls = sent()
    (outcome,) = write_many(client, [Item(mailbox.ad_guid, desired)])
    assert outcome.error is None, outcome.error
    assert alias in outcome.written.read_back["proxyAddresses"]
    assert sent()["modify"] - calls.get("modify", 0) >= 1
    assert ad.read(mailbox.ad_guid, "proxyAddresses")["proxyAddresses"].count(alias) == 1


def test_claiming_one_task_that_cannot_be_claimed_claims_no_other(ad):
    running, other = cloud_mailbox(), cloud_mailbox()
    first = job.claim(request(running, CustomAttribute3="running").pk)
    waiting = request(running, CustomAttribute3="waits")  # its mailbox has a task running
    due = request(other, CustomAttribute3="due")
    assert job.claim(waiting.pk) is None
    assert WritebackTask.objects.get(pk=due.pk).state == State.QUEUED  # not claimed with nobody to run it
    assert first is not None and WritebackTask.objects.get(pk=first.task.pk).state == State.RUNNING
