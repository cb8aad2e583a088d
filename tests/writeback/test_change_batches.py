"""A bulk edit applied end to end: the batch's steps and the apply jobs on a real worker (SimpleWorker, burst) against
a private directory and Exchange Online emulator. Two lines for one mailbox apply in file order (the second is made
only once the first has applied); the batch ends DONE with every request APPLIED."""

import pytest

from soa.choices import Authority, BatchState, ChangeState
from soa.models import AcceptedDomain
from soa.services.change_batches import batch_progress, change_batch_create
from tests.writeback.test_change_apply import fresh, in_exchange, people, stack, tenant, unused, work

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
