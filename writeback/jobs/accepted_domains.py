"""The tenant's accepted domains, read from Exchange Online (Get-AcceptedDomain) into the portal's cache table.

Validation of a help-desk edit refuses new SMTP addresses while the cached list is older than
ACCEPTED_DOMAINS_TTL_SECONDS (soa.selectors.accepted_domains_known), so the list is read again on a schedule, every
half of that TTL (one refresh may fail and the list is still trusted until the next), and once after every inventory
import (writeback.jobs.inventory), which is how a new tenant (the demo, a test's) gets it first. The schedule is one
self-renewing RQ chain (writeback.jobs.chain, as the sweep and the inventory schedule); ``manage.py
accepted_domains_schedule`` starts it. Each refresh runs on the job lifecycle: a failure is recorded as
``writeback.job.failed`` and the cached list is kept.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone
from rq.job import Job

from soa.models import AcceptedDomain
from soa.services import SoaError
from soa.services.accepted_domains import accepted_domains_replace
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient, ExchangeOnlineError
from writeback.jobs.chain import Chain
from writeback.jobs.lifecycle import Work, job_failed, perform

logger = logging.getLogger(__name__)

QUEUE = "default"
NEXT_KEY = "soa:accepted-domains:next"
LOCK_KEY = "soa:accepted-domains:lock"
JOB_ID_PREFIX = "accepted-domains-"
JOB_TIMEOUT = 300  # one Get-AcceptedDomain, with the client's retries
RESULT_TTL = 86400
MIN_INTERVAL = 60  # a TTL of a minute or less still refreshes at most once a minute


def accepted_domains_refresh(exchange: ExchangeOnlineClient | None = None) -> list[AcceptedDomain]:
    """Read Get-AcceptedDomain and replace the cached list with it (soa.services.accepted_domains). Raises the client's
    errors, or SoaError when Exchange lists none (the cached list is then kept)."""
    client = exchange or ExchangeOnlineClient(ExchangeConfig.from_settings())
    fetched_at = timezone.now()
    return accepted_domains_replace(domains=client.get_accepted_domains(), fetched_at=fetched_at)


def _describe(rows: list[AcceptedDomain]) -> str:
    return f"{len(rows)} accepted domain(s): {', '.join(row.domain for row in rows)}"


def refresh_now(key: str, exchange: ExchangeOnlineClient | None = None) -> str | None:
    """One refresh on the job lifecycle, under ``key`` as its job id: an Exchange error or an empty list is recorded
    (``writeback.job.failed``) and logged, not raised, so an import or a tick that asked for it is not failed by it.
    Returns what was stored, or None when it failed."""
    work = Work(
        name="Accepted domains refresh",
        claim=lambda key: key,  # no row to claim: the cache is replaced whole
        run=lambda _key: _describe(accepted_domains_refresh(exchange)),
        finish=lambda _key, result: result,
        fail=lambda key, error: job_failed(name="Accepted domains refresh", job_id=key, error=error),
        expected=(ExchangeOnlineError, SoaError),
    )
    return perform(work, key, correlation=key)


def interval_seconds() -> int | None:
    """Seconds between scheduled refreshes: half of ACCEPTED_DOMAINS_TTL_SECONDS; None when the TTL is 0 (no cache,
    so nothing to keep fresh)."""
    ttl = int(settings.ACCEPTED_DOMAINS_TTL_SECONDS)
    if ttl < 0:
        raise ValueError(f"ACCEPTED_DOMAINS_TTL_SECONDS cannot be negative (it is {ttl}).")
    if ttl == 0:
        return None
    return max(ttl // 2, MIN_INTERVAL)


def accepted_domains_periodic_job() -> str:
    """RQ entrypoint (scheduled): schedule the next refresh when this is the chain's, then refresh."""
    return CHAIN.tick(lambda: _describe(accepted_domains_refresh()), interval_seconds)


def accepted_domains_schedule() -> tuple[Job | None, bool]:
    """Make sure the refresh is scheduled (safe to call any number of times). Returns the pending tick and whether
    this call created it; (None, False) when the TTL is 0."""
    return CHAIN.ensure(interval_seconds())


CHAIN = Chain(
    name="Accepted domains refresh",
    queue_name=QUEUE,
    next_key=NEXT_KEY,
    lock_key=LOCK_KEY,
    job_id_prefix=JOB_ID_PREFIX,
    func=accepted_domains_periodic_job,
    description="Accepted domains refresh (every {seconds} s)",
    timeout=JOB_TIMEOUT,
    result_ttl=RESULT_TTL,
)
