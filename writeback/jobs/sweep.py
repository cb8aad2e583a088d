"""The periodic sweep: every kind of work whose heartbeat stopped, in one job on the sweep's chain
(writeback.wave_schedule). Each kind's retry policy (writeback.jobs.lifecycle) says what becomes of a stale row:
wave members are returned to PENDING and their waves queued again; inventory runs are failed, so the next import
may run; writeback tasks are returned to QUEUED (or failed once their policy gives up) and scheduled again; change
requests being applied are released for another attempt (or failed once CHANGE_RETRY gives up); drift scans are
failed, so the next may run; a tenant default switch whose worker died is failed, for an administrator to
retry; running bulk edits whose step was lost get their next step queued.
"""

from writeback.jobs.change_batches import change_batch_sweep
from writeback.jobs.changes import change_request_sweep
from writeback.jobs.drift import drift_scan_sweep
from writeback.jobs.inventory import inventory_sweep
from writeback.jobs.tenant_default import tenant_default_sweep
from writeback.jobs.waves import wave_sweep_job
from writeback.jobs.writeback import writeback_sweep


def sweep_job() -> int:
    """Sweep stale inventory runs, writeback tasks, change requests, bulk edits and wave members. Returns how many
    members were returned to PENDING (what the sweep's job shows as its result; failed imports are logged and audited
    as ``writeback.inventory.failed``, returned writeback tasks as ``writeback.task.released``, change requests as
    ``soa.change.released``, restarted bulk edits as ``soa.batch.restarted``)."""
    inventory_sweep()
    writeback_sweep()
    change_request_sweep()
    change_batch_sweep()
    drift_scan_sweep()
    tenant_default_sweep()
    return wave_sweep_job()
