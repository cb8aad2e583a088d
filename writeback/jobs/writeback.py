"""Writeback tasks on the job lifecycle: one mailbox's Exchange attributes written into its AD user.

The run row is writeback.models.WritebackTask. The claim takes a QUEUED task (skip_locked; not while another task
of the same mailbox runs: that one's end starts it) and counts an attempt (``writeback.task.started``). The run, outside
any transaction, reads the AD user by objectGUID, heartbeats, writes the minimal modify that makes the written-back
attributes hold the task's desired values (writeback.writeback_plan: never identity attributes, never the MOERA) and
reads back, all through DirectoryClient.write (one search, one modify, one search; the search alone when AD already
agrees), then compares the read-back with the cloud by the drift rules. The finish records what was observed,
applied and read back, brings ``Mailbox.ad_values`` and its drift up to date, and records drift findings
(``writeback.task.completed``).

Drift: an attribute whose AD value the portal did not write and that differs from both the last known AD value
(``Mailbox.ad_values``) and the cloud's was edited in AD directly. The task records a DriftFinding
(``writeback.drift.found``), writes the cloud's value over it (the cloud holds authority) and closes the finding
(``writeback.drift.resolved``), in the finish's transaction; a write that fails leaves the finding open.

Batches: a job claims its own task and up to BATCH - 1 other due ones (queued, not waiting for a scheduled retry, of
mailboxes with no task running), each counted as an attempt and audited as above, and writes them together
(writeback.directory.batch.write_many: one search for all, a modify each, one search to read them back). Each task
then ends on its own, exactly as a task written alone would. A full batch queues a follow-up job first, so a backlog
spreads over every idle worker; a request that finds a job already waiting in the queue queues none
(writeback.tasks.writeback_enqueue), since that job will take it.

Errors: a retryable directory error (busy, unavailable, a broken connection) releases the task back to QUEUED and
schedules its job after WRITEBACK_RETRY's backoff (``writeback.task.released``); the worker never sleeps. After the
policy's last attempt, or on a permanent error, the task ends FAILED with the directory's message
(``writeback.task.failed``), for a person to retry (writeback.tasks.writeback_task_retry). The periodic sweep
returns tasks whose heartbeat stopped the same way (``writeback_sweep``).
"""

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from portal.audit import audit_record, audit_record_many
from portal.correlation import correlation_scope
from soa.attributes import by_ad_name
from soa.models import Mailbox
from soa.services.change_apply import cloud_values_record
from soa.values import exo_values, refresh_drift
from writeback.directory import DirectoryError, Written
from writeback.directory.batch import Item, Outcome, write_many
from writeback.drift import REPAIR_SOURCE
from writeback.exchange import ExchangeOnlineError
from writeback.jobs.clients import directory_client, exchange_client
from writeback.jobs.lifecycle import (
    WRITEBACK_RETRY,
    RunAbandoned,
    Work,
    describe,
    require_run_transition,
    run_fail,
    run_move,
    run_release,
)
from writeback.models import DriftFinding, WritebackTask
from writeback.rows import update_rows
from writeback.tasks import EXCHANGE_NAMES, WritebackError, writeback_drain_enqueue, writeback_enqueue
from writeback.writeback_plan import Finding, ad_desired, ad_side, drift_findings, not_taken

logger = logging.getLogger(__name__)

STARTED = "writeback.task.started"
COMPLETED = "writeback.task.completed"
FAILED = "writeback.task.failed"
RELEASED = "writeback.task.released"
SUPERSEDED = "writeback.task.superseded"
DRIFT_FOUND = "writeback.drift.found"
DRIFT_RESOLVED = "writeback.drift.resolved"

# A task is one read, one modify and one read-back, each bounded by LDAP_TIMEOUT_SECONDS and one reconnect: a task
# RUNNING without a heartbeat for this long belongs to a dead worker.
STALE_AFTER = dt.timedelta(minutes=5)
# How many of the mailbox's earlier writebacks count as "written by the portal" when AD holds their values.
HISTORY = 5
# Tasks one job claims and writes together: a modify each, and two searches per GUIDS_PER_SEARCH, on the wire; their
# rows ended one by one. What a job costs once (rq's bookkeeping, each step's statements, and with a forking worker the
# horse, its database connection and LDAP bind) is shared by the batch: with 2 forking workers a task cost 3.70 ms of
# CPU in all at 50 and 2.83 ms at 200, in runs minutes apart on a busy machine (bench/bench_writeback.py). A batch of
# 200 is written in under half a second.
BATCH = 200
# A batch says it is alive at least this often while it writes (STALE_AFTER is far longer).
HEARTBEAT_EVERY = 10.0

State = WritebackTask.State
# Database errors a batch may meet that say nothing about the task: its task is given back for a retry, not failed.
DATABASE_TRANSIENT = (OperationalError, InterfaceError)


@dataclass
class Claimed:
    """A claimed task, what the portal knew of AD when it was claimed, and what the run has read so far."""

    task: WritebackTask
    last_known: dict[str, Any]
    observed: dict[str, Any] | None = None  # AD's Exchange attributes as first read (LDAP names)
    written: Written | None = None
    findings: list[Finding] = field(default_factory=list)
    cloud: dict[str, Any] | None = None  # a repair's Exchange Online values as read just before the write
    first_wanted: dict[str, Any] | None = None  # AD's desired values planned on the first read (reused, not redone)

    def planned(self, observed: dict[str, Any]) -> list[str]:
        """The attributes written back, planned on ``observed`` (the first read's plan when that is what it is)."""
        if observed is self.observed and self.first_wanted is not None:
            return list(self.first_wanted)
        return list(ad_desired(self.task.desired, observed))


# -- the steps --------------------------------------------------------------------------------------------------------


def claim(task_id: int) -> Claimed | None:
    """QUEUED -> RUNNING with one attempt more (audited); None when the task is not queued, another worker holds
    it, or another task of its mailbox is running (that one's end queues this one)."""
    claimed = claim_batch(task_id, limit=0)
    return claimed[0] if claimed else None


def claim_batch(task_id: int | None, *, limit: int | None = None) -> list[Claimed]:
    """Claim ``task_id`` (when it is queued, whatever its retry time: its job was delivered) and up to ``limit`` due
    queued tasks in all (BATCH by default; 0: the named task alone), oldest first, at most one per mailbox and none of
    a mailbox whose task is running; each QUEUED -> RUNNING with one attempt more, audited under its own correlation
    id, in one transaction."""
    limit = BATCH if limit is None else limit
    now = timezone.now()
    with transaction.atomic():
        running = WritebackTask.objects.filter(state=State.RUNNING).values("mailbox_id")
        queued = (
            WritebackTask.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("mailbox")
            .defer("mailbox__exo_values", "mailbox__drift")  # the batch reads AD's side of the mailbox only
            .filter(state=State.QUEUED)
            .exclude(mailbox_id__in=running)
        )
        tasks = list(queued.filter(pk=task_id)) if task_id is not None else []
        if limit and len(tasks) < limit:
            due = queued.filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now)).exclude(pk=task_id)
            tasks += list(due.order_by("pk")[: limit - len(tasks)])
        job_id = _current_job_id()
        claimed, mailboxes, events = [], set(), []
        for task in tasks:
            if task.mailbox_id in mailboxes:
                continue  # the constraint allows one queued task a mailbox; a second could only be mid-supersede
            mailboxes.add(task.mailbox_id)
            require_run_transition(task, State.RUNNING)
            before = task.state_snapshot()
            task.state, task.attempts, task.retry_at = State.RUNNING, task.attempts + 1, None
            task.started_at = task.heartbeat_at = now
            task.job_id = job_id or task.job_id
            events.append({"actor": None, "action": STARTED, "obj": task, "before": before,
                           "after": task.state_snapshot(), "correlation_id": _correlation(task)})  # fmt: skip
            claimed.append(Claimed(task=task, last_known=dict(task.mailbox.ad_values)))
        fields = ["state", "attempts", "retry_at", "started_at", "heartbeat_at", "job_id"]
        update_rows([item.task for item in claimed], fields)
        audit_record_many(events)
    return claimed


def _correlation(task: WritebackTask) -> str:
    return task.correlation_id or f"writeback-{task.pk}"


def _current_job_id() -> str:
    from rq import get_current_job

    job = get_current_job()
    return job.id if job is not None else ""


class _Beat:
    """The batch's heartbeat: every task still in flight, at most every HEARTBEAT_EVERY seconds, and before a modify
    is planned; a task the sweep has taken from this worker (no longer RUNNING) stops there (RunAbandoned)."""

    def __init__(self, batch: Sequence[Claimed]):
        self.pending = {claimed.task.pk for claimed in batch}
        self.lost: set[int] = set()
        self.last = -HEARTBEAT_EVERY

    def check(self, task_id: int) -> None:
        if time.monotonic() - self.last >= HEARTBEAT_EVERY:
            ids = self.pending - self.lost
            alive = set(WritebackTask.objects.filter(pk__in=ids, state=State.RUNNING).values_list("pk", flat=True))
            WritebackTask.objects.filter(pk__in=alive).update(heartbeat_at=timezone.now())
            self.lost |= ids - alive
            self.last = time.monotonic()
        if task_id in self.lost:
            raise RunAbandoned(f"writeback task #{task_id} is no longer running here (swept as stale?).")


def _run(claimed: Claimed) -> Written:
    """One task written alone (a batch of one); raises what its batch's outcome holds."""
    (outcome,) = _run_batch([claimed])
    if outcome.error is not None:
        raise outcome.error
    return outcome.written


def _run_batch(batch: Sequence[Claimed]) -> list[Outcome]:
    """Read, write the differences, read back, for every task of the batch; no transaction is open here. Each
    outcome holds the task's Written, or its error: the directory's, WritebackError when the mailbox has no AD user
    or AD, read back, does not hold what was written, RunAbandoned when the sweep took it."""
    beat = _Beat(batch)
    outcomes: list[Outcome] = [Outcome() for _ in batch]
    items, indexes = [], []
    for index, claimed in enumerate(batch):
        if claimed.task.mailbox.ad_guid is None:
            outcomes[index].error = WritebackError(
                f"{claimed.task.mailbox} has no AD user the portal knows of; import the inventory first."
            )
            continue
        if claimed.task.source == REPAIR_SOURCE:
            try:
                _read_cloud(claimed)
            except (ExchangeOnlineError, WritebackError) as error:
                outcomes[index].error = error
                continue
        items.append(Item(claimed.task.mailbox.ad_guid, _wanted(claimed, beat)))
        indexes.append(index)
    for index, outcome in zip(indexes, write_many(directory_client(), items), strict=True):
        outcomes[index] = outcome
        if outcome.written is not None:
            error = _not_taken(batch[index], outcome.written)
            if error is not None:
                outcome.written, outcome.error = None, error
    return outcomes


def _read_cloud(claimed: Claimed) -> None:
    """A drift repair writes the cloud's values as Exchange Online holds them now, read just before the write, not as
    the portal last stored them: an edit made in the cloud since the last read is not undone in AD."""
    mailbox = claimed.task.mailbox
    if mailbox.exo_object_id is None or not mailbox.in_exo:
        raise WritebackError(
            f"{mailbox} has no Exchange Online mailbox the portal knows of; import the inventory first."
        )
    current = exchange_client().get_mailbox(str(mailbox.exo_object_id))
    if not current.get("IsExchangeCloudManaged"):
        raise WritebackError(
            f"{mailbox} is no longer cloud-managed in Exchange Online: AD holds its Exchange attributes again, so "
            "there is no cloud value to repair AD with. Import the inventory to bring the portal up to date."
        )
    claimed.cloud = exo_values(current)
    claimed.task.desired = {name: value for name, value in claimed.cloud.items() if name in EXCHANGE_NAMES}


def _wanted(claimed: Claimed, beat: _Beat):
    def wanted(observed: dict[str, Any]) -> dict[str, Any]:
        # Called after each read and before any modify: a task the sweep has taken from this worker stops here.
        beat.check(claimed.task.pk)
        if claimed.observed is None:
            claimed.observed, claimed.first_wanted = observed, ad_desired(claimed.task.desired, observed)
            claimed.findings = _findings(claimed, observed)
            return claimed.first_wanted
        return ad_desired(claimed.task.desired, observed)

    return wanted


def _not_taken(claimed: Claimed, written: Written) -> WritebackError | None:
    claimed.written = written
    planned = claimed.planned(written.observed)
    differing = not_taken(planned=planned, read_back=written.read_back, cloud=claimed.task.desired)
    if differing:
        return WritebackError(
            f"AD, read back after the write, still differs from Exchange Online in: {', '.join(differing)}."
        )
    return None


def _findings(claimed: Claimed, observed: dict[str, Any]) -> list[Finding]:
    task = claimed.task
    planned = claimed.planned(observed)
    kwargs = {"planned": planned, "observed": observed, "last_known": claimed.last_known, "cloud": task.desired}
    if not drift_findings(**kwargs):
        return []  # the common case: no need to read the mailbox's history
    earlier = (
        WritebackTask.objects.filter(mailbox_id=task.mailbox_id, started_at__isnull=False)
        .exclude(pk=task.pk)
        .order_by("-pk")
        .values_list("desired", flat=True)[:HISTORY]
    )
    return drift_findings(**kwargs, portal_wrote=list(earlier))


def _observed(claimed: Claimed) -> dict[str, Any]:
    """What the task records as observed: AD's values of the attributes it writes, as first read."""
    if claimed.observed is None:
        return {}
    return {name: claimed.observed.get(name) for name in ad_desired(claimed.task.desired, claimed.observed)}


def _record_findings(task: WritebackTask, findings: list[Finding], *, resolved: bool) -> None:
    """Record each finding (reusing one still open for the same value, as a retried task finds it again) with its
    audit event; with ``resolved``, close it as overwritten with the cloud value, audited too."""
    now = timezone.now()
    for finding in findings:
        row = (
            DriftFinding.objects.filter(
                mailbox_id=task.mailbox_id, attribute=finding.attribute, resolved_at__isnull=True
            )
            .order_by("-pk")
            .first()
        )
        if row is None or row.ad_value != finding.ad_value:
            row = DriftFinding.objects.create(
                mailbox_id=task.mailbox_id, attribute=finding.attribute, ad_value=finding.ad_value,
                last_known_value=finding.last_known, cloud_value=finding.cloud_value, task=task, found_at=now,
            )  # fmt: skip
            audit_record(
                actor=None, action=DRIFT_FOUND, obj=row, after=row.audit_snapshot(),
                reason=f"AD's {finding.attribute} was changed outside the portal.",
            )  # fmt: skip
        if resolved:
            before = row.audit_snapshot()
            row.resolved_at, row.resolution = now, DriftFinding.Resolution.OVERWRITTEN
            row.save(update_fields=["resolved_at", "resolution"])
            audit_record(
                actor=None, action=DRIFT_RESOLVED, obj=row, before=before, after=row.audit_snapshot(),
                reason=f"{task} wrote the cloud's value over it.",
            )  # fmt: skip


def _resolve_written(task: WritebackTask, planned: list[str]) -> None:
    """Close the mailbox's other open findings (a drift scan's, or one a repair was queued for) of the attributes this
    task wrote: AD, read back, now holds the cloud's value (each audited ``writeback.drift.resolved``)."""
    written = {by_ad_name(name).exo for name in planned}
    now = timezone.now()
    for row in DriftFinding.objects.select_for_update().filter(
        mailbox_id=task.mailbox_id, attribute__in=written, resolved_at__isnull=True
    ):
        before = row.audit_snapshot()
        row.resolved_at, row.resolution = now, DriftFinding.Resolution.OVERWRITTEN
        row.save(update_fields=["resolved_at", "resolution"])
        audit_record(
            actor=None, action=DRIFT_RESOLVED, obj=row, before=before, after=row.audit_snapshot(),
            reason=f"{task} wrote the cloud's value over it.",
        )  # fmt: skip


def _finish(claimed: Claimed, written: Written) -> WritebackTask | None:
    """DONE with what was observed, applied and read back (a batch of one: ``_finish_batch``)."""
    return _finish_batch([(claimed, written)])[0]


# What finishing a task reads of its mailbox and writes back (refresh_drift compares the two sides' values).
_MAILBOX_FIELDS = ("id", "upn", "in_ad", "in_exo", "ad_values", "exo_values", "drift", "has_drift", "ad_read_at",
                   "exo_read_at", "primary_smtp", "version")  # fmt: skip


def _finish_batch(done: Sequence[tuple[Claimed, Written]]) -> list[WritebackTask | None]:
    """Each task DONE with what was observed, applied and read back (``writeback.task.completed``, under its own
    correlation id); each mailbox's picture of AD (and, for a repair, of the cloud) and its drift updated; the drift
    found recorded and closed; all in one transaction, with a statement per batch rather than per task where the
    rows allow it. Then the mailboxes' next queued tasks are started. None for a task that had ended meanwhile."""
    now = timezone.now()
    with transaction.atomic():
        # The claim loaded the tasks whole; here only their state is read again (under the lock), and only the fields
        # of the mailboxes this step writes or compares: decoding every JSON field of both again cost as much as
        # the rest of the step.
        states = dict(
            WritebackTask.objects.select_for_update()
            .filter(pk__in=[claimed.task.pk for claimed, _ in done])
            .values_list("pk", "state")
        )
        mailboxes = (
            Mailbox.objects.select_for_update()
            .only(*_MAILBOX_FIELDS)
            .in_bulk([claimed.task.mailbox_id for claimed, _ in done])
        )
        open_findings = set(
            DriftFinding.objects.filter(mailbox_id__in=mailboxes, resolved_at__isnull=True).values_list(
                "mailbox_id", "attribute"
            )
        )
        rows: list[WritebackTask | None] = []
        events: list[dict[str, Any]] = []
        for claimed, written in done:
            row, mailbox = claimed.task, mailboxes[claimed.task.mailbox_id]
            if states.get(row.pk) != State.RUNNING:
                # Taken by the sweep while this worker was slow: the sweep has recorded what became of it.
                logger.warning("%s already ended as %s; not recording its completion.", row, states.get(row.pk))
                rows.append(None)
                continue
            with correlation_scope(_correlation(row)):
                before = row.state_snapshot()
                rows.append(_record_done(claimed, written, row, mailbox, open_findings, now))
            events.append({"actor": None, "action": COMPLETED, "obj": row, "before": before,
                           "after": row.audit_snapshot(), "correlation_id": _correlation(row)})  # fmt: skip
        finished = [row for row in rows if row is not None]
        update_rows(finished, ["state", "error", "finished_at", "desired", "observed", "applied", "read_back"])
        changed = [mailboxes[row.mailbox_id] for row in finished]
        fields = ["ad_values", "drift", "has_drift", "ad_read_at", "updated_at"]
        if any(claimed.cloud is not None for claimed, _ in done):
            fields += ["exo_values", "exo_read_at", "primary_smtp", "version"]
        for mailbox in changed:
            mailbox.updated_at = now
        update_rows(changed, fields)
        audit_record_many(events)
    _start_next(*(claimed.task.mailbox_id for claimed, _ in done))
    return rows


def _record_done(
    claimed: Claimed,
    written: Written,
    row: WritebackTask,
    mailbox: Mailbox,
    open_findings: set[tuple[int, str]],
    now: dt.datetime,
) -> WritebackTask:
    planned = claimed.planned(written.observed)
    if claimed.cloud is not None:
        if any(mailbox.exo_values.get(name) != value for name, value in claimed.cloud.items()):
            mailbox.version += 1  # the cloud moved since the portal last read it: a page showing the old is stale
        cloud_values_record(mailbox, claimed.cloud, at=now)
    mailbox.ad_values = {**mailbox.ad_values, **ad_side(written.read_back)}
    refresh_drift(mailbox)
    mailbox.ad_read_at = now
    require_run_transition(row, State.DONE)
    row.state, row.error, row.finished_at, row.desired = State.DONE, "", now, claimed.task.desired
    row.observed = {name: written.observed.get(name) for name in planned}
    row.applied = _json(written.changes)
    row.read_back = {name: written.read_back.get(name) for name in planned}
    _record_findings(row, claimed.findings, resolved=True)
    if any((mailbox.pk, by_ad_name(name).exo) in open_findings for name in planned):
        _resolve_written(row, planned)
    return row


def _fail(claimed: Claimed, error: str) -> WritebackTask | None:
    """FAILED with the reason (the directory's message for its errors); drift already found stays open."""
    row = run_fail(
        WritebackTask, claimed.task.pk, error, action=FAILED, observed=_observed(claimed),
        then=lambda row: _record_findings(row, claimed.findings, resolved=False),
    )  # fmt: skip
    _start_next(claimed.task.mailbox_id)
    return row


def _release(claimed: Claimed, error: str) -> WritebackTask | None:
    """A retryable error: give the task back for a later attempt, as the retry policy says."""
    return give_back(claimed.task, error, findings=claimed.findings, observed=_observed(claimed))


WRITEBACK = Work(
    name="Writeback",
    claim=claim,
    run=_run,
    finish=_finish,
    fail=_fail,
    expected=(DirectoryError, WritebackError, ExchangeOnlineError),
    release=_release,
)


def writeback_task_job(task_id: int | None = None) -> str | None:
    """RQ entrypoint: write ``task_id``'s values into AD, with a batch of other due tasks (none named: the batch
    alone). Safe to deliver twice (the second finds it claimed or ended) and to run again (it reads AD first and
    writes only what differs). Returns the state it left the named task in (None: it did not claim it)."""
    batch = claim_batch(task_id)
    if len(batch) == BATCH:
        writeback_drain_enqueue()  # more may be waiting: another idle worker takes the next batch meanwhile
    if not batch:
        return None
    return _complete_batch(batch, named=task_id)


def _complete_batch(batch: list[Claimed], *, named: int | None) -> str | None:
    """Run the batch, then end each task as ``lifecycle.complete`` ends one: finished, released for a retryable
    error, failed otherwise; an unexpected error is raised again after every task has been ended."""
    try:
        outcomes = _run_batch(batch)
    except Exception as error:
        # Nothing recorded which task got how far: each is given back (its next claim reads AD before writing).
        logger.exception("Writeback batch failed unexpectedly")
        for claimed in batch:
            with correlation_scope(_correlation(claimed.task)):
                _release(claimed, describe(error, expected=False))
        raise
    done = [(claimed, outcome.written) for claimed, outcome in zip(batch, outcomes, strict=True) if not outcome.error]
    finished = dict(zip([claimed.task.pk for claimed, _ in done], _finish_batch(done) if done else [], strict=True))
    state, unexpected = None, None
    for claimed, outcome in zip(batch, outcomes, strict=True):
        if outcome.error is None:
            row = finished[claimed.task.pk]
        else:
            with correlation_scope(_correlation(claimed.task)):
                row = _end(claimed, outcome)
        if outcome.error is not None and not isinstance(outcome.error, WRITEBACK.expected + (RunAbandoned,)):
            unexpected = unexpected or outcome.error
        if claimed.task.pk == named and row is not None:
            state = row.state
    if unexpected is not None:
        raise unexpected
    return state


def _end(claimed: Claimed, outcome: Outcome) -> WritebackTask | None:
    error = outcome.error
    if error is None:
        return _finish(claimed, outcome.written)
    if isinstance(error, RunAbandoned):
        logger.warning("Writeback stopped: %s", error)
        return None
    if isinstance(error, DATABASE_TRANSIENT):
        # The portal's database, not the directory, refused a statement mid-batch (a dropped connection, a lock
        # held past its timeout): AD may hold the values already, and the next attempt reads before it writes.
        logger.warning("Writeback will be retried after a database error: %s", error)
        return _release(claimed, describe(error, expected=False))
    if isinstance(error, WRITEBACK.expected):
        if getattr(error, "retryable", False):
            logger.warning("Writeback will be retried: %s", error)
            return _release(claimed, describe(error, expected=True))
        logger.warning("Writeback failed: %s", error)
        return _fail(claimed, describe(error, expected=True))
    logger.error("Writeback of task #%s failed unexpectedly", claimed.task.pk, exc_info=error)
    return _fail(claimed, describe(error, expected=False))


# -- giving a task back, starting the next, the sweep ------------------------------------------------------------------


def give_back(
    task: WritebackTask, error: str, *, findings: Sequence[Finding] = (), observed: dict[str, Any] | None = None
) -> WritebackTask | None:
    """Return a RUNNING task for another attempt (WRITEBACK_RETRY): QUEUED and scheduled after the policy's backoff
    (``writeback.task.released``); SUPERSEDED when a newer request for the mailbox is queued meanwhile (it carries
    the newer values); FAILED once the policy gives up. Drift found so far is recorded, open."""
    fields: dict[str, Any] = {"observed": observed} if observed is not None else {}

    def keep_findings(row: WritebackTask) -> None:
        _record_findings(row, list(findings), resolved=False)

    if WRITEBACK_RETRY.gives_up(task.attempts):
        message = f"Gave up after {task.attempts} attempts. {error}"
        row = run_fail(WritebackTask, task.pk, message, action=FAILED, then=keep_findings, **fields)
        _start_next(task.mailbox_id)
        return row
    with transaction.atomic():
        # A request for the mailbox waits on this lock, so none can queue a task between the look and the move.
        Mailbox.objects.select_for_update().filter(pk=task.mailbox_id).first()
        newer = (
            WritebackTask.objects.filter(mailbox_id=task.mailbox_id, state=State.QUEUED)
            .values_list("pk", flat=True)
            .first()
        )
        if newer is not None:
            row = run_move(
                WritebackTask, task.pk, State.SUPERSEDED, action=SUPERSEDED, error=error, then=keep_findings,
                fields={**fields, "superseded_by_id": newer},
            )  # fmt: skip
            transaction.on_commit(lambda: writeback_enqueue(newer))
            return row
        retry_at = timezone.now() + dt.timedelta(seconds=WRITEBACK_RETRY.delay(task.attempts))
        row = run_release(
            WritebackTask, task.pk, error, action=RELEASED, then=keep_findings, retry_at=retry_at,
            queued_at=timezone.now(), **fields,
        )  # fmt: skip
        if row is not None:
            transaction.on_commit(lambda: writeback_enqueue(task.pk, at=retry_at))
    return row


def _start_next(*mailbox_ids: int) -> None:
    """Queue the mailboxes' queued tasks, which waited for the ones that just ended (their own jobs may have found
    those running), in one query: one job takes every waiting task that is due. Called after the commit; a second
    delivery of its job is harmless."""
    waiting = (
        WritebackTask.objects.filter(mailbox_id__in=mailbox_ids, state=State.QUEUED, retry_at__isnull=True)
        .values_list("pk", flat=True)
        .first()
    )
    if waiting is not None:
        writeback_enqueue(waiting)


def writeback_sweep(older_than_seconds: float | None = None) -> list[int]:
    """Return tasks left RUNNING by a dead worker (no heartbeat for STALE_AFTER) as a retryable failure would
    (``give_back``), and queue again queued tasks whose job was lost (queued that long ago and not waiting for a
    scheduled retry). Returns the ids of the stale tasks."""
    limit = dt.timedelta(seconds=older_than_seconds) if older_than_seconds is not None else STALE_AFTER
    now = timezone.now()
    cutoff = now - limit
    stale = WritebackTask.objects.filter(state=State.RUNNING, heartbeat_at__lt=cutoff).select_related("mailbox")
    swept = []
    for task in stale.order_by("pk"):
        error = (
            f"Its worker stopped: no heartbeat since {task.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC, more than "
            f"{limit.total_seconds():.0f} s before the sweep."
        )
        if give_back(task, error) is not None:
            swept.append(task.pk)
    lost = (
        WritebackTask.objects.filter(state=State.QUEUED, queued_at__lt=cutoff)
        .exclude(retry_at__gte=cutoff)
        .exclude(pk__in=swept)
        .values_list("pk", flat=True)
    )
    for task_id in list(lost):
        WritebackTask.objects.filter(pk=task_id, state=State.QUEUED).update(queued_at=now)
        writeback_enqueue(task_id)
    if swept:
        logger.warning("Writeback sweep returned task(s) %s whose heartbeat had stopped.", swept)
    return swept


def _json(changes: dict[str, list[tuple[str, list[Any]]]]) -> dict[str, list[list[Any]]]:
    return {name: [[op, list(values)] for op, values in ops] for name, ops in changes.items()}
