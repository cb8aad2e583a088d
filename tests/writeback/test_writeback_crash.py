"""A writeback whose real worker process (rqworker and its work horse) is SIGKILLed after its modify reached AD but
before its result was recorded: the task is left RUNNING, the sweep returns it, and a new worker completes it once,
reading AD first, so the value is neither written twice nor lost and the portal's own write is not taken for drift.
Needs a database that worker processes share with the test: PostgreSQL (CI).

To make the kill land there, the test holds a lock on the mailbox's row, which the job's finish takes to update the
portal's picture of AD: the worker writes AD, reads it back, then waits on the lock until it is killed.
"""

import subprocess
import time as clock
import uuid

import django_rq
import psycopg
import pytest
from django.db import connection

from portal.audit import verify_chain
from portal.models import AuditEvent
from soa import jobs
from soa.models import Mailbox
from tests.writeback.worker_process import kill_worker, worker_command, worker_env
from tests.writeback.writeback_support import cloud_mailbox, start_directory
from writeback.jobs.writeback import writeback_sweep
from writeback.models import DriftFinding, WritebackTask
from writeback.tasks import writeback_enqueue, writeback_task_request

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def ad(tmp_path_factory):
    directory = start_directory(tmp_path_factory.mktemp("writeback-crash-slapd"))
    yield directory
    directory.stop()


@pytest.fixture
def stack(ad, settings):
    if connection.vendor != "postgresql":
        pytest.skip("worker processes share the test database only on PostgreSQL (CI runs it there)")
    ad.point_settings(settings)
    queue = django_rq.get_queue(jobs.WRITEBACK_QUEUE)
    queue.empty()
    yield ad
    queue.empty()


def lock_row(table: str, pk: int) -> psycopg.Connection:
    """Another session holding ``FOR UPDATE`` on one row until it rolls back."""
    db = connection.settings_dict
    held = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
        dbname=db["NAME"],
    )  # fmt: skip
    held.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", [pk])  # noqa: S608 - a table name of ours
    return held


def waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_a_worker_killed_after_its_modify_leaves_the_task_to_the_sweep_and_it_completes_once(stack, tmp_path):
    mailbox = cloud_mailbox()
    alias = f"smtp:crash-{uuid.uuid4().hex[:6]}@corp.example.com"
    desired = {
        **mailbox.exo_values, "EmailAddresses": [*mailbox.exo_values["EmailAddresses"], alias],
        "CustomAttribute3": "once", "ExtensionCustomAttribute2": ["one", "two"],
    }  # fmt: skip
    Mailbox.objects.filter(pk=mailbox.pk).update(exo_values=desired)
    task = writeback_task_request(mailbox_id=mailbox.pk, desired=desired, source="manual")  # queued on commit

    held = lock_row("soa_mailbox", mailbox.pk)
    log_path = tmp_path / "worker.log"
    try:
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                worker_command(jobs.WRITEBACK_QUEUE), env=worker_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            deadline = clock.monotonic() + 120
            while not waiting_on_a_lock():  # AD written and read back; the finish waits for the mailbox row
                assert clock.monotonic() < deadline and worker.poll() is None, log_path.read_text()
                clock.sleep(0.05)
            kill_worker(worker)
    finally:
        held.rollback()
        held.close()

    values = stack.read(mailbox.ad_guid, "proxyAddresses", "extensionAttribute3", "msExchExtensionCustomAttribute2")
    assert alias in values["proxyAddresses"] and values["extensionAttribute3"] == ["once"]  # the modify had landed
    killed = WritebackTask.objects.get(pk=task.pk)
    assert killed.state == WritebackTask.State.RUNNING and killed.attempts == 1 and killed.applied == {}

    assert writeback_sweep(older_than_seconds=0) == [task.pk]
    swept = WritebackTask.objects.get(pk=task.pk)
    assert swept.state == WritebackTask.State.QUEUED and swept.error.startswith("Its worker stopped")
    assert AuditEvent.objects.filter(action="writeback.task.released", object_id=str(task.pk)).count() == 1

    writeback_enqueue(task.pk)  # its retry is scheduled for later; deliver it now instead of waiting
    with open(tmp_path / "worker-next.log", "wb") as log:
        subprocess.run(
            worker_command(jobs.WRITEBACK_QUEUE, "--burst"), env=worker_env(), stdout=log, stderr=subprocess.STDOUT,
            timeout=300,
        )  # fmt: skip
    done = WritebackTask.objects.get(pk=task.pk)
    assert done.state == WritebackTask.State.DONE, (tmp_path / "worker-next.log").read_text()[-4000:]
    assert done.attempts == 2 and done.applied == {}  # AD already held the values: nothing written twice
    after = stack.read(mailbox.ad_guid, "proxyAddresses", "extensionAttribute3", "msExchExtensionCustomAttribute2")
    assert after == values and after["proxyAddresses"].count(alias) == 1
    assert sorted(after["msExchExtensionCustomAttribute2"]) == ["one", "two"]
    assert AuditEvent.objects.filter(action="writeback.task.completed", object_id=str(task.pk)).count() == 1
    assert not DriftFinding.objects.filter(mailbox=mailbox).exists()  # the portal's own write is not drift
    mailbox.refresh_from_db()
    assert mailbox.ad_values["CustomAttribute3"] == "once" and not mailbox.has_drift
    assert verify_chain()[1] is None
