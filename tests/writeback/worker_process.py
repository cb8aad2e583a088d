"""Real rqworker processes for the crash tests: their environment, and killing one the way a crash would.

A worker process sees the test's database only on PostgreSQL (SQLite's test database lives in the test
process's memory), so the tests that use these skip elsewhere; CI runs them on PostgreSQL.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import django_rq
from django.conf import settings
from django.db import connection

from writeback import wave_jobs

# What a worker process needs to reach the test's tenant (set by private_tenant in the test process), and the
# rules the test changed for it: the runner re-checks the quiet period itself before each flip.
_SETTINGS = ("EXO_BASE_URL", "EXO_TENANT", "ENTRA_AUTHORITY", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET_FILE",
             "EXO_CA_FILE", "GRAPH_BASE_URL", "LDAP_URL", "LDAP_BIND_DN", "LDAP_PASSWORD_FILE", "LDAP_BASE_DN",
             "WAVE_QUIET_PERIOD_HOURS", "WAVE_PARALLEL_BATCHES", "EXO_SHARED_BUDGET")  # fmt: skip


def worker_command(*extra: str) -> list[str]:
    return [sys.executable, str(settings.BASE_DIR / "manage.py"), "rqworker", wave_jobs.QUEUE, *extra]


def worker_env() -> dict[str, str]:
    """The environment of a worker process that sees this test's database, Redis and tenant."""
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true"}
    env["DATABASE_URL"] = f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["REDIS_URL"] = settings.REDIS_URL
    env.update({name: str(getattr(settings, name)) for name in _SETTINGS})
    return env


def start_worker(log) -> subprocess.Popen:
    return subprocess.Popen(
        worker_command(), env=worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


# Whether a test killed a worker: what it left in rq's started registries must go when the test ends.
_killed = False


def forget_killed_jobs() -> None:
    """Empty rq's started-job registries after a test that killed a worker (tests/conftest.py calls this).

    A killed worker's job stays "started" in Redis, and some later worker's registry cleanup, in another test,
    would move it to the failed registry as abandoned (or trip over its expired execution), failing that test's
    "no job failed" check. Within the killing test that cleanup is part of what is tested; after it, it is noise.
    """
    global _killed
    if not _killed:
        return
    _killed = False
    for name in settings.RQ_QUEUES:
        queue = django_rq.get_queue(name)
        queue.connection.delete(queue.started_job_registry.key)


def kill_worker(worker: subprocess.Popen) -> None:
    """SIGKILL an rqworker and its work horse, as a crashed machine would. The horse runs in a process group of
    its own (rq calls setpgrp after the fork), so killing the worker's group alone would leave it flipping."""
    global _killed
    _killed = True
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == worker.pid:
            children.append(int(stat.parent.name))
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)


def run_worker_until_empty(log, timeout: float = 300) -> None:
    subprocess.run(worker_command("--burst"), env=worker_env(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
