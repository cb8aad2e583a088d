"""Which rows already have a job waiting in Redis: what lets the sweep queue again the work whose job never reached
Redis (it was down when the change committed) or was lost with Redis's data, without queueing a second job for work
that merely waits its turn behind others.

A job "waits" when it is queued or scheduled; one being run has claimed its rows, which the sweep sees in the
database. Jobs are matched by their function's dotted name (and the old names soa.jobs.MOVED_JOBS keeps importable)
and their first argument, the id of the row they work on.
"""

from __future__ import annotations

from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job

from soa.jobs import MOVED_JOBS


def job_names(func: str) -> set[str]:
    """The dotted names a job running ``func`` may carry in Redis: its own and the old ones still importable."""
    return {func} | {old for old, new in MOVED_JOBS.items() if new == func}


def waiting_keys(func: str, *, queue_name: str) -> set[Any]:
    """The first arguments of the jobs running ``func`` that are queued or scheduled on ``queue_name``."""
    import django_rq

    queue = django_rq.get_queue(queue_name)
    ids = queue.get_job_ids() + queue.scheduled_job_registry.get_job_ids()
    names = job_names(func)
    keys = set()
    for job in Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer):
        if job is None:
            continue  # finished or deleted between the two reads
        try:
            func_name, args = job.func_name, job.args
        except DeserializationError:  # a job another release queued, which this one cannot read: not ours
            continue
        if func_name in names and args:
            keys.add(args[0])
    return keys
