"""The mailbox page's Changes card for a cloud-managed request: its Active Directory line is the state of the AD
writeback the request asked for (queued, written, or failed with the directory's message), read from the task itself,
with the real apply and writeback jobs on a real worker against a private directory and Exchange Online emulator."""

import uuid

import django_rq
import pytest
from django.urls import reverse
from rq import SimpleWorker

from soa import jobs
from soa.choices import Authority, ChangeRoute, ChangeState
from soa.models import Mailbox
from tests.writeback.test_change_apply import ask, people, stack, tenant, unused, work
from writeback.models import WritebackTask

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["people", "stack", "tenant"]  # fixtures used by name


def _apply_only() -> None:
    """The worker on the change queue alone: the request is applied, its writeback stays queued."""
    queue = django_rq.get_queue(jobs.QUEUE)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def _ad_line(client, mailbox: Mailbox) -> str:
    page = client.get(reverse("mailbox_changes", args=[mailbox.pk])).content.decode()
    (line,) = [item for item in page.split("<li") if "<strong>Active Directory</strong>" in item]
    return line


def _set(value: str) -> dict:
    return {"op": "set_custom_attribute", "attribute": "CustomAttribute7", "value": value}


def test_the_ad_line_of_a_cloud_request_follows_its_writeback_from_queued_to_written(stack, people, client):
    mailbox = unused(Authority.CLOUD)
    request = ask(people["help"], mailbox, _set("card-1"))
    _apply_only()
    request.refresh_from_db()
    assert request.state == ChangeState.APPLIED and request.route == ChangeRoute.EXO_THEN_AD
    task = WritebackTask.objects.get(pk=request.results["directory"]["writeback_task"])
    assert task.state == WritebackTask.State.QUEUED
    client.force_login(people["help"])

    assert "Active Directory</strong>: queued" in _ad_line(client, mailbox)
    assert _polling(client, mailbox)  # the request is applied, but its writeback still moves: the card keeps polling
    work()
    task.refresh_from_db()
    assert task.state == WritebackTask.State.DONE
    assert "Active Directory</strong>: written" in _ad_line(client, mailbox)
    assert not _polling(client, mailbox)


def _polling(client, mailbox: Mailbox) -> bool:
    card = client.get(reverse("mailbox_changes", args=[mailbox.pk]), headers={"HX-Request": "true"}).content.decode()
    head = card.split(">", 1)[0]
    return 'hx-trigger="every 2s' in head and 'data-testid="changes-live"' in card


def test_the_ad_line_shows_a_failed_writeback_with_the_directorys_message(stack, people, client):
    mailbox = unused(Authority.CLOUD)
    request = ask(people["help"], mailbox, _set("card-2"))
    _apply_only()
    Mailbox.objects.filter(pk=mailbox.pk).update(ad_guid=uuid.uuid4())  # paired with a user AD does not have
    work()
    request.refresh_from_db()
    task = WritebackTask.objects.get(pk=request.results["directory"]["writeback_task"])
    assert task.state == WritebackTask.State.FAILED and task.error.startswith("No directory entry under")
    client.force_login(people["help"])

    line = _ad_line(client, mailbox)
    assert 'class="error"' in line and "Active Directory</strong>: failed" in line
    assert "No directory entry under" in line
