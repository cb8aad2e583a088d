"""The audit chain's background work: the periodic publication of its head, and the verification asked for from
the audit page.

Publication is one self-renewing RQ chain (writeback.jobs.chain, as the sweep and the inventory schedule), a tick
every AUDIT_HEAD_INTERVAL_MINUTES; ``manage.py audit_head_schedule`` starts it. Each tick recomputes the events since
the last published head and publishes the new one (portal.audit_head.publish_verified_head); a chain that does not
verify is not published, and the tick fails (``writeback.job.failed``) with the broken event's reason.

The verification the page asks for runs here rather than in the web request: it reads the table in short chunks
outside any transaction (portal.audit_chain.verify_chain), so it holds no lock while appends go on, and a long history
does not hold a web worker. Its result is the ``portal.audit.verified`` event it records, under the job's id as the
correlation id, which is what the page polls for (portal.views.audit).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from rq import get_current_job
from rq.job import Job

from portal.audit import audit_record
from portal.audit_chain import verify_chain
from portal.audit_head import HeadError, publish_head, publish_verified_head, read_heads
from portal.models import User
from writeback.jobs.chain import Chain
from writeback.jobs.lifecycle import Work, job_failed, perform

logger = logging.getLogger(__name__)

QUEUE = "default"
NEXT_KEY = "soa:audit-head:next"
LOCK_KEY = "soa:audit-head:lock"
JOB_ID_PREFIX = "audit-head-"
VERIFY_JOB_PREFIX = "audit-verify-"
JOB_TIMEOUT = 3600  # a first publication recomputes the whole chain (about 20,000 events/s)
RESULT_TTL = 86400
PROGRESS_KEY = "verified"  # in the verification job's meta: events verified so far, for the page


# -- periodic publication -------------------------------------------------------------------------------------------


def interval_seconds() -> int | None:
    """Seconds between publications; None when AUDIT_HEAD_INTERVAL_MINUTES is 0 (only audit_verify publishes)."""
    minutes = int(settings.AUDIT_HEAD_INTERVAL_MINUTES)
    if minutes < 0:
        raise ValueError(f"AUDIT_HEAD_INTERVAL_MINUTES cannot be negative (it is {minutes}).")
    return minutes * 60 or None


def _publish() -> str:
    head, places = publish_verified_head()
    return f"published head #{head.head_id} ({head.count} events) to {', '.join(places) or 'nowhere'}"


def audit_head_periodic_job() -> str:
    """RQ entrypoint (scheduled): schedule the next publication when this tick is the chain's, then verify the events
    since the last head and publish the new one. Returns what it published."""
    return CHAIN.tick(_publish, interval_seconds)


def audit_head_schedule() -> tuple[Job | None, bool]:
    """Make sure the publication is scheduled (safe to call any number of times). Returns the pending tick and whether
    this call created it; (None, False) when AUDIT_HEAD_INTERVAL_MINUTES is 0."""
    return CHAIN.ensure(interval_seconds())


CHAIN = Chain(
    name="Audit head publication",
    queue_name=QUEUE,
    next_key=NEXT_KEY,
    lock_key=LOCK_KEY,
    job_id_prefix=JOB_ID_PREFIX,
    func=audit_head_periodic_job,
    description="Audit head publication (every {seconds} s)",
    timeout=JOB_TIMEOUT,
    result_ttl=RESULT_TTL,
)


# -- verification asked for from the page ---------------------------------------------------------------------------


def audit_verification_job(requested_by_id: int | None) -> dict | None:
    """RQ entrypoint: verify the whole chain against the published heads, publish the head when it holds, and record
    the result as ``portal.audit.verified`` on behalf of the user who asked. Returns what was recorded."""
    job = get_current_job()
    key = job.id if job is not None else f"{VERIFY_JOB_PREFIX}inline"
    work = Work(
        name="Audit chain verification",
        claim=lambda key: key,  # nothing to claim: a verification only reads, and two of them agree
        run=lambda _key: _verify(job),
        finish=lambda _key, result: _record(requested_by_id, result),
        fail=lambda key, error: job_failed(name="Audit chain verification", job_id=key, error=error),
        expected=(HeadError,),
    )
    return perform(work, key, correlation=key)


def _verify(job: Job | None) -> dict:
    def progress(checked: int) -> None:
        if job is not None:
            job.meta[PROGRESS_KEY] = checked
            job.save_meta()

    report = verify_chain(heads=read_heads(), progress=progress)
    result = {
        "checked": report.checked,
        "broken_at": report.broken.event_id if report.broken else None,
        "reason": report.broken.reason if report.broken else "",
        "summary": report.summary(),
        "published": [],
    }
    if report.broken is None:
        _head, result["published"] = publish_head(report)
    return result


def _record(requested_by_id: int | None, result: dict) -> dict:
    actor = User.objects.filter(pk=requested_by_id).first() if requested_by_id else None
    with transaction.atomic():
        audit_record(actor=actor, action="portal.audit.verified", object_type="audit", after=result)
    return result
