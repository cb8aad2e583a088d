"""A bulk edit applied end to end: the batch's steps and the apply jobs on a real worker (SimpleWorker, burst) against
a private directory and Exchange Online emulator. Two lines for one mailbox apply in file order (the second is made
only once the first has applied); the batch ends DONE with every request APPLIED. A batch whose step was lost (its
worker killed, or the step never queued) is restarted by the sweep and completes; a healthy or waiting one is left."""

import datetime as dt

import django_rq
import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import AuditEvent
from soa import jobs
from soa.choices import Authority, BatchState, ChangeState
from soa.models import AcceptedDomain, ChangeBatch, ChangeRequest
from soa.services.change_batches import batch_progress, change_batch_claim, change_batch_create
from tests.writeback.test_change_apply import fresh, in_exchange, people, stack, tenant, unused, work
from writeback.jobs.change_batches import change_batch_sweep

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["people", "stack", "tenant"]  # fixtures used by name


def test_a_batch_creates_its_requests_and_they_apply_in_file_order_per_mailbox(stack, people, settings):
    _, exchange = stack
    settings.CHANGE_APPROVAL_OPERATIONS = []  # a new primary applies without an approver here
    assert AcceptedDomain.objects.exists()
    first, second = unused(Authority.CLOUD), unused(Authority.CLOUD)
    alias = fresh("bulk", first)
    text = [
        "mailbox,operation,attribute,value",
        f"{first.upn},add-alias,,{alias}",
        f"{second.upn},set,CustomAttribute5,bulk-5",
        f"{first.upn},make-primary,,{alias}",  # valid only once line 2 has added it
        f"{first.upn},set,CustomAttribute6,after",
    ]
    batch = change_batch_create(actor=people["help"], lines=text, file_name="bulk.csv", reason="ticket 77",
                                idempotency_key="bulk-1")  # fmt: skip
    work()

    batch.refresh_from_db()
    assert batch.state == BatchState.DONE, batch.error
    lines = list(batch.lines.select_related("request").order_by("number"))
    assert [line.request.state for line in lines] == [ChangeState.APPLIED] * 4, [line.error for line in lines]
    ids = {line.number: line.request for line in lines}
    assert ids[2].finished_at <= ids[4].created_at and ids[4].finished_at <= ids[5].created_at
    cloud = in_exchange(exchange, first)
    assert cloud["WindowsEmailAddress"].lower() == alias.lower()
    assert cloud["CustomAttribute6"] == "after"
    assert in_exchange(exchange, second)["CustomAttribute5"] == "bulk-5"
    progress = batch_progress(batch)
    assert (progress.created, progress.applied, progress.failed, progress.percent) == (4, 4, 0, 100)


def _lost_step(batch_id: int, *, minutes: int) -> None:
    """What a worker killed mid-step leaves: the batch RUNNING, its last heartbeat ``minutes`` ago, no step queued."""
    for name in (jobs.QUEUE, jobs.WRITEBACK_QUEUE):
        django_rq.get_queue(name).empty()
    past = timezone.now() - dt.timedelta(minutes=minutes)
    ChangeBatch.objects.filter(pk=batch_id).update(heartbeat_at=past, updated_at=past)


def test_the_sweep_restarts_a_batch_whose_step_was_lost_and_it_completes_and_leaves_a_healthy_one(
    stack, people, settings, client
):
    _, exchange = stack
    settings.CHANGE_APPROVAL_OPERATIONS = []
    stalled_box, healthy_box = unused(Authority.CLOUD), unused(Authority.CLOUD)
    stalled = change_batch_create(
        actor=people["help"], lines=["mailbox,operation,attribute,value",
                                     f"{stalled_box.upn},set,CustomAttribute7,swept-1",
                                     f"{stalled_box.upn},set,CustomAttribute8,swept-2"],
        file_name="lost.csv", reason="ticket 90", idempotency_key="bulk-lost",
    )  # fmt: skip
    assert change_batch_claim(batch_id=stalled.pk) == stalled.pk  # the step started, then its worker was killed
    healthy = change_batch_create(
        actor=people["help"], lines=["mailbox,operation,attribute,value", f"{healthy_box.upn},set,CustomAttribute7,h"],
        file_name="healthy.csv", reason="ticket 91", idempotency_key="bulk-healthy",
    )  # fmt: skip
    assert change_batch_claim(batch_id=healthy.pk) == healthy.pk  # its step is running now (heartbeat just made)
    _lost_step(stalled.pk, minutes=30)
    jobs.enqueue(jobs.CHANGE_BATCH_JOB, healthy.pk)  # the healthy batch's step is on its queue

    client.force_login(people["help"])
    page = client.get(reverse("bulk_detail", args=[stalled.pk])).content.decode()
    assert 'data-testid="batch-stalled"' in page and "Stalled since" in page
    assert 'data-testid="batch-stalled"' not in client.get(reverse("bulk_detail", args=[healthy.pk])).content.decode()

    assert change_batch_sweep() == [stalled.pk]
    assert change_batch_sweep() == []  # restarted once: no second step, no second event, while it is queued
    events = AuditEvent.objects.filter(action="soa.batch.restarted")
    assert list(events.values_list("object_id", flat=True)) == [str(stalled.pk)]
    work()

    for batch in (stalled, healthy):
        batch.refresh_from_db()
        assert batch.state == BatchState.DONE, batch.error
    assert in_exchange(exchange, stalled_box)["CustomAttribute8"] == "swept-2"
    assert AuditEvent.objects.filter(action="soa.batch.restarted").count() == 1
    assert 'data-testid="batch-stalled"' not in client.get(reverse("bulk_detail", args=[stalled.pk])).content.decode()


def test_the_sweep_leaves_a_batch_waiting_for_its_request_to_end(stack, people, settings):
    settings.CHANGE_APPLY_ENABLED = False  # the first line's request stays open: the second line waits its turn
    mailbox = unused(Authority.CLOUD)
    batch = change_batch_create(
        actor=people["help"], lines=["mailbox,operation,attribute,value", f"{mailbox.upn},set,CustomAttribute7,w1",
                                     f"{mailbox.upn},set,CustomAttribute8,w2"],
        file_name="wait.csv", reason="ticket 92", idempotency_key="bulk-wait",
    )  # fmt: skip
    work()
    batch.refresh_from_db()
    assert batch.state == BatchState.RUNNING and batch_progress(batch).created == 1
    _lost_step(batch.pk, minutes=30)
    ChangeRequest.objects.filter(batch_line__batch=batch).update(updated_at=timezone.now() - dt.timedelta(minutes=30))

    assert change_batch_sweep() == []  # not stalled: its next step comes when the open request ends
    assert not AuditEvent.objects.filter(action="soa.batch.restarted").exists()


def test_the_sweep_queues_the_first_step_of_a_confirmed_batch_whose_job_was_lost(stack, people, settings):
    """Confirmed while Redis lost its queue (emptied by a restart, or down at the commit): no step ever ran."""
    _, exchange = stack
    settings.CHANGE_APPROVAL_OPERATIONS = []
    mailbox = unused(Authority.CLOUD)
    batch = change_batch_create(
        actor=people["help"], lines=["mailbox,operation,attribute,value", f"{mailbox.upn},set,CustomAttribute9,first"],
        file_name="never.csv", reason="ticket 93", idempotency_key="bulk-never-queued",
    )  # fmt: skip
    _lost_step(batch.pk, minutes=30)
    ChangeBatch.objects.filter(pk=batch.pk).update(
        heartbeat_at=None, created_at=timezone.now() - dt.timedelta(minutes=30)
    )
    batch.refresh_from_db()
    assert batch.state == BatchState.QUEUED and batch.started_at is None

    assert change_batch_sweep() == [batch.pk]
    work()
    batch.refresh_from_db()
    assert batch.state == BatchState.DONE, batch.error
    assert in_exchange(exchange, mailbox)["CustomAttribute9"] == "first"
