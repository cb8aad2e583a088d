"""An inventory import whose real worker process (rqworker and its work horse) is SIGKILLed mid-import: the run is
left RUNNING and blocks every new import, until the sweep fails it for its stopped heartbeat, with an audit event;
the next import then runs on a new worker and completes. Needs a database that worker processes share with the
test: PostgreSQL (CI).

To make the kill land mid-import, the emulator holds every Get-Mailbox (latency fault on that cmdlet only): once the
run's phase says it has written the AD pass and is reading Exchange, its worker is waiting for an answer that cannot
come before the kill.
"""

import time as clock

import django_rq
import pytest
from django.db import connection

from portal.audit import verify_chain
from portal.models import AuditEvent
from tests.exchange_fixtures import private_tenant
from tests.writeback.worker_process import kill_worker, run_worker_until_empty, start_worker
from writeback.inventory import InventoryError, inventory_run_request
from writeback.jobs.sweep import sweep_job
from writeback.models import InventoryRun

USERS = 80
HOLD = 20.0  # seconds the emulator holds each Get-Mailbox; the kill comes within moments of the first

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=USERS, seed=43) as (_, exchange, _report):
        yield exchange


@pytest.fixture
def exchange(tenant):
    if connection.vendor != "postgresql":
        pytest.skip("worker processes share the test database only on PostgreSQL (CI runs it there)")
    tenant.reset()
    django_rq.get_queue("default").empty()
    yield tenant
    tenant.clear_faults()
    tenant.reset()


def test_an_import_killed_mid_run_is_failed_by_the_sweep_and_the_next_import_completes(exchange, settings, tmp_path):
    exchange.set_faults(latency_ms=HOLD * 1000, latency_cmdlet="Get-Mailbox")
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL)  # queued for a worker on commit
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = start_worker(log)
        deadline = clock.monotonic() + 120
        while InventoryRun.objects.get(pk=run.pk).phase != "exchange":
            assert clock.monotonic() < deadline and worker.poll() is None, log_path.read_text()
            clock.sleep(0.05)
        kill_worker(worker)  # inside the held Get-Mailbox
    exchange.clear_faults()

    killed = InventoryRun.objects.get(pk=run.pk)
    assert killed.state == InventoryRun.State.RUNNING and killed.ad_read == USERS and killed.exo_read == 0
    with pytest.raises(InventoryError, match=f"Import #{run.pk} is already running"):
        inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)

    settings.INVENTORY_STALE_SECONDS = 0  # any heartbeat is old enough: the worker is known to be dead
    sweep_job()
    killed.refresh_from_db()
    assert killed.state == InventoryRun.State.FAILED and killed.error.startswith("Its worker stopped")
    event = AuditEvent.objects.get(action="writeback.inventory.failed", object_id=str(run.pk))
    assert event.actor is None and event.reason == killed.error

    following = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL)
    with open(tmp_path / "worker-next.log", "wb") as log:
        run_worker_until_empty(log)
    following.refresh_from_db()
    assert following.state == InventoryRun.State.DONE, (tmp_path / "worker-next.log").read_text()[-4000:]
    assert following.ad_read == USERS and following.exo_read > 0
    assert AuditEvent.objects.filter(action="writeback.inventory.completed", object_id=str(following.pk)).exists()
    assert verify_chain()[1] is None
