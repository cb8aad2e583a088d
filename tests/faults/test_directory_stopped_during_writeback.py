"""The directory (slapd) stopped for OUTAGE_SECONDS (60 s, the issue's figure) while help-desk edits of cloud-managed
mailboxes are being written back to AD: each edit is applied in Exchange Online once, its writeback task waits and is
tried again on WRITEBACK_RETRY's schedule, and once slapd is back on the same port and data every task completes by
itself: each value in AD once (an alias is not added twice), nothing else in the entry touched, one
``writeback.task.completed`` per task, the audit chain intact. Real components as in
test_directory_stopped_during_wave_revert; the clock of tests/faults/fault_stack.py lets the retry delays pass.
"""

import os
import uuid

import pytest

from portal.audit import verify_chain
from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, ChangeState
from soa.models import ChangeRequest, Mailbox
from soa.services.changes import change_request_create
from tests.faults.fault_stack import (
    Event,
    VirtualClock,
    cloud_managed,
    empty_queues,
    import_inventory,
    tenant_for,
)
from tests.writeback.test_change_apply import read_ad
from writeback.jobs.lifecycle import WRITEBACK_RETRY
from writeback.models import WritebackTask

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE_SECONDS = float(os.environ.get("FAULT_OUTAGE_SECONDS", "60"))  # on the fault clock; the real wait is seconds
EDITS = 4
USERS = 20


@pytest.fixture(scope="module")
def tenant(tmp_path_factory):
    with tenant_for(tmp_path_factory.mktemp("writeback") / "slapd", users=USERS, seed=89) as tenant:
        cloud_managed(tenant.exchange, USERS // 2)
        yield tenant


@pytest.fixture
def stack(tenant):
    empty_queues()
    tenant.exchange.clear_faults()
    import_inventory()
    yield tenant
    if not tenant.directory_running:
        tenant.start_directory()


def test_directory_stopped_for_a_minute_during_writeback_every_task_completes_by_itself_each_value_once(
    stack, make_user
):
    helpdesk = make_user("hugo", Role.HELPDESK)
    mailboxes = list(
        Mailbox.objects.filter(authority=Authority.CLOUD, in_exo=True, in_ad=True, has_drift=False)
        .exclude(ad_guid=None)
        .order_by("upn")[:EDITS]
    )
    assert len(mailboxes) == EDITS
    untouched = {m.pk: read_ad(stack.directory, m, "displayName", "extensionAttribute9") for m in mailboxes}
    sets_before = stack.exchange.counters()["by_cmdlet"].get("Set-Mailbox", 0)
    stack.stop_directory()  # down before the first writeback runs, up again OUTAGE_SECONDS later

    aliases = {}
    for mailbox in mailboxes:
        aliases[mailbox.pk] = f"outage-{uuid.uuid4().hex[:6]}@{mailbox.primary_smtp.partition('@')[2]}"
        change_request_create(
            actor=helpdesk, mailbox_id=mailbox.pk, reason="ticket 60", base_version=mailbox.version,
            operations=[{"op": "add_alias", "address": aliases[mailbox.pk]},
                        {"op": "set_custom_attribute", "attribute": "CustomAttribute4", "value": "during outage"}],
            idempotency_key=f"outage-{mailbox.pk}",
        )  # fmt: skip
    clock = VirtualClock()
    clock.run(
        lambda: (
            not WritebackTask.objects.exclude(state__in=[WritebackTask.State.DONE, WritebackTask.State.FAILED]).exists()
            and WritebackTask.objects.count() == EDITS
        ),
        events=[Event(OUTAGE_SECONDS, stack.start_directory)],
    )

    requests = list(ChangeRequest.objects.all())
    assert [r.state for r in requests] == [ChangeState.APPLIED] * EDITS, [r.error for r in requests]
    tasks = list(WritebackTask.objects.all())
    assert all(t.state == WritebackTask.State.DONE for t in tasks), [(t.state, t.attempts, t.error) for t in tasks]
    assert all(t.attempts <= WRITEBACK_RETRY.max_attempts for t in tasks)
    assert max(t.attempts for t in tasks) >= 3  # tried again while slapd was down: the outage was met, not skipped
    assert clock.now() >= OUTAGE_SECONDS
    assert stack.exchange.counters()["by_cmdlet"].get("Set-Mailbox", 0) - sets_before == EDITS  # Exchange once each

    for mailbox in mailboxes:
        ad = read_ad(stack.directory, mailbox, "proxyAddresses", "extensionAttribute4")
        assert [a.lower() for a in ad["proxyAddresses"]].count(f"smtp:{aliases[mailbox.pk]}".lower()) == 1
        assert ad["extensionAttribute4"] == ["during outage"]
        assert read_ad(stack.directory, mailbox, "displayName", "extensionAttribute9") == untouched[mailbox.pk]
    for task in tasks:
        completed = AuditEvent.objects.filter(action="writeback.task.completed", object_id=str(task.pk))
        assert completed.count() == 1
    assert AuditEvent.objects.filter(action="writeback.task.released").exists()  # each wait is on the record
    for request in requests:
        assert AuditEvent.objects.filter(action="soa.change.applied", object_id=str(request.pk)).count() == 1
    assert verify_chain()[1] is None
