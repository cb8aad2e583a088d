"""One wave worked by several worker processes at once (WAVE_PARALLEL_BATCHES), at the wave's own rate.

A wave runs as a chain of batches: each batch queues the next when it ends (writeback.wave_jobs.settle). With
WAVE_PARALLEL_BATCHES above 1, a batch that has claimed its members and sees more due members left also queues
helpers, up to that many batches of the wave queued, scheduled or running in all; each helper's chain then goes on
by itself. Members are never shared: each batch claims its own rows (``skip_locked``; SQLite takes the write lock
when a transaction starts), and pause, cancel and the window are checked by every batch before each member, as for
one. A race between two claims can queue one helper too many; that costs a job that claims little, not a second flip.

The wave's ``max_rate`` holds across all its batches: before each flip a batch reserves the wave's next free slot in
Redis (one key per wave, Redis's clock), ``1 / max_rate`` after the one before. When Redis does not answer, each batch
flips at ``max_rate / WAVE_PARALLEL_BATCHES``, so together they still stay within the rate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import redis
from django.conf import settings

from soa.jobs import QUEUE, WAVE_RUN_JOB, wave_enqueue

logger = logging.getLogger(__name__)

SLOT_KEY = "soa:wave-slot:{wave_id}"
# KEYS[1] the wave's next free slot (Redis time, seconds); ARGV[1] the wave's interval. Returns the seconds to wait.
RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local at = math.max(now, tonumber(redis.call('GET', KEYS[1])) or now)
local after = at + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.17g', after), 'PX', math.ceil((after - now) * 1000) + 60000)
return string.format('%.17g', at - now)
"""


def parallel_batches() -> int:
    return max(1, int(getattr(settings, "WAVE_PARALLEL_BATCHES", 1)))


def other_batches(wave_id: int) -> int:
    """Batches of the wave queued, scheduled or running besides the current job (raises redis.RedisError)."""
    import django_rq
    from rq import get_current_job
    from rq.exceptions import DeserializationError
    from rq.job import Job

    from writeback.jobs.waiting import job_names

    queue = django_rq.get_queue(QUEUE)
    ids = set(queue.get_job_ids())
    ids |= set(queue.scheduled_job_registry.get_job_ids()) | set(queue.started_job_registry.get_job_ids())
    current = get_current_job()
    ids.discard(current.id if current is not None else None)
    names, count = job_names(WAVE_RUN_JOB), 0
    for job in Job.fetch_many(sorted(ids), connection=queue.connection, serializer=queue.serializer):
        if job is None:
            continue
        try:
            if job.func_name in names and job.args and job.args[0] == wave_id:
                count += 1
        except DeserializationError:
            continue
    return count


def spread(wave_id: int, *, due: int, batch_size: int) -> int:
    """After a batch's claim: queue helper batches for the ``due`` members still unclaimed, up to
    WAVE_PARALLEL_BATCHES batches of the wave in all. Returns how many were queued."""
    parallel = parallel_batches()
    if parallel <= 1 or due <= 0:
        return 0
    try:
        wanted = min(parallel - 1, math.ceil(due / batch_size)) - other_batches(wave_id)
    except redis.RedisError as error:
        logger.warning("Wave %s: not spreading over more workers, Redis does not answer (%s).", wave_id, error)
        return 0
    queued = 0
    for _ in range(max(wanted, 0)):
        if wave_enqueue(wave_id=wave_id) is not None:
            queued += 1
    if queued:
        logger.info("Wave %s: %d more batch(es) queued for other workers (%d due members unclaimed).",
                    wave_id, queued, due)  # fmt: skip
    return queued


class WaveSlots:
    """Each flip's turn at the wave's rate, shared by all of the wave's batches (see the module's docstring)."""

    def __init__(self, wave_id: int, max_rate: float, *, connect: Callable[[], redis.Redis] | None = None):
        self.key = SLOT_KEY.format(wave_id=wave_id)
        self.interval = 1.0 / max_rate
        self._connect = connect
        self._script = None
        self.shared = True

    def wait(self) -> float | None:
        """Seconds until this flip's turn, or None when Redis does not answer (pace this batch alone at
        max_rate / WAVE_PARALLEL_BATCHES)."""
        if not self.shared:
            return None
        try:
            if self._script is None:
                connect = self._connect or _settings_connection()
                self._script = connect().register_script(RESERVE)
            return max(float(self._script(keys=[self.key], args=[repr(self.interval)])), 0.0)
        except (redis.RedisError, OSError) as error:
            logger.warning("Wave rate: Redis does not answer (%s); this batch flips at the rate divided by %d.",
                           error.__class__.__name__, parallel_batches())  # fmt: skip
            self.shared = False
            return None


def _settings_connection() -> Callable[[], redis.Redis]:
    from writeback.exchange.shared_budget import settings_connection

    return settings_connection()
