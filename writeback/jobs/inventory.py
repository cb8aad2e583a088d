"""The inventory import on the job lifecycle: its run function and its RQ entrypoint.

The run row is writeback.models.InventoryRun. Claimed QUEUED -> RUNNING (``writeback.inventory.started``), it
heartbeats with every page it writes (writeback.inventory), and ends DONE (``writeback.inventory.completed``) or
FAILED (``writeback.inventory.failed``): with the client's or the import's own message for the errors a person can
act on, with the error's type for anything else. A run whose heartbeat stops (its worker was killed) is failed by
the periodic sweep (``inventory_sweep``) after INVENTORY_STALE_SECONDS, so it no longer blocks the next import.
"""

import datetime as dt
import logging

from django.conf import settings

from portal.correlation import correlation_scope
from writeback.directory import DirectoryClient, DirectoryConfig, DirectoryError
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient, ExchangeOnlineError, GraphClient, GraphError
from writeback.inventory import InventoryError, inventory_enqueue, run_import
from writeback.inventory_shards import inventory_shard_work
from writeback.jobs.accepted_domains import refresh_now
from writeback.jobs.lifecycle import (
    INVENTORY_RETRY,
    REQUEUE_AFTER,
    RunAbandoned,
    Work,
    complete,
    perform,
    run_claim,
    run_fail,
    run_finish,
    run_requeue_lost,
    run_sweep,
)
from writeback.models import InventoryObject, InventoryRun

logger = logging.getLogger(__name__)

STARTED = "writeback.inventory.started"
COMPLETED = "writeback.inventory.completed"
FAILED = "writeback.inventory.failed"
REQUEUED = "writeback.inventory.requeued"


def claim(run_id: int) -> InventoryRun | None:
    """Claim a queued import (QUEUED -> RUNNING, audited); None when another worker has it or it has ended."""
    return run_claim(InventoryRun, run_id, action=STARTED)


def _run(run: InventoryRun) -> InventoryRun:
    """The import itself, with clients built from settings. No transaction is open here."""
    directory = DirectoryClient(DirectoryConfig.from_settings())
    try:
        config = ExchangeConfig.from_settings()
        graph = GraphClient(config) if settings.INVENTORY_GRAPH_PAIRING else None
        return run_import(run, exchange=ExchangeOnlineClient(config), directory=directory, graph=graph)
    finally:
        directory.close()


def _finish(run: InventoryRun, _result: InventoryRun) -> InventoryRun:
    """DONE; then the tenant's accepted domains are read again (a new tenant gets them with its first import). A
    failure of that read is recorded on its own and does not fail the import."""
    ended = run_finish(InventoryRun, run.pk, action=COMPLETED, phase="") or InventoryRun.objects.get(pk=run.pk)
    if ended.state == InventoryRun.State.DONE:
        refresh_now(f"accepted-domains-after-inventory-{run.pk}")
    return ended


def _fail(run: InventoryRun, error: str) -> InventoryRun:
    return run_fail(InventoryRun, run.pk, error, action=FAILED, phase="") or InventoryRun.objects.get(pk=run.pk)


INVENTORY = Work(
    name="Inventory import",
    claim=claim,
    run=_run,
    finish=_finish,
    fail=_fail,
    expected=(ExchangeOnlineError, DirectoryError, GraphError, InventoryError),
)


def execute(run: InventoryRun) -> InventoryRun:
    """Run an import claimed in this process (``manage.py inventory_import``, tests) on the lifecycle; returns the
    row as it ended. An unexpected error is recorded on the row, then raised."""
    ended = complete(INVENTORY, run)
    return ended if ended is not None else InventoryRun.objects.get(pk=run.pk)


def inventory_run_job(run_id: int) -> None:
    """RQ entrypoint: run one queued import. Safe to deliver twice (the second delivery finds it claimed)."""
    perform(INVENTORY, run_id, correlation=f"inventory-{run_id}")


def inventory_shard_job(run_id: int) -> None:
    """RQ entrypoint: help a full import spread over workers (writeback.inventory_shards) by importing parts of its
    directory until none is queued. A part that fails is recorded on it, and the run's coordinator fails the run."""
    with correlation_scope(f"inventory-{run_id}"):
        try:
            done = inventory_shard_work(run_id)
        except RunAbandoned as error:
            logger.warning("Inventory import #%s: this helper stopped: %s", run_id, error)
            return
        except INVENTORY.expected as error:
            logger.warning("Inventory import #%s: a part failed here: %s", run_id, error)
            return
        logger.info("Inventory import #%s: this helper imported %d parts", run_id, done)


def stale_after() -> dt.timedelta:
    """How long a running import may go without a heartbeat before the sweep takes it for dead."""
    seconds = int(settings.INVENTORY_STALE_SECONDS)
    if seconds < 0:
        raise ValueError(f"INVENTORY_STALE_SECONDS cannot be negative (it is {seconds}).")
    return dt.timedelta(seconds=seconds)


def inventory_sweep() -> list[int]:
    """Fail the running imports whose heartbeat stopped (audited as ``writeback.inventory.failed``), so that the
    one-open-import rule lets the next one run, and queue again a queued import whose job Redis lost (audited
    ``writeback.inventory.requeued``), which would block every later import. Returns the ids failed."""
    run_requeue_lost(InventoryRun, older_than=REQUEUE_AFTER, action=REQUEUED, requeue=inventory_enqueue)
    # A spread import's shared Exchange objects outlive it only when its coordinator died: they go with the run.
    InventoryObject.objects.exclude(run__state=InventoryRun.State.RUNNING).delete()
    return run_sweep(InventoryRun, stale_after=stale_after(), action=FAILED, policy=INVENTORY_RETRY, phase="")
