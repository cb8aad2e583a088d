"""Component checks behind /healthz: the database, Redis and the directory, each bounded in time, and the periodic
jobs (writeback.periodic): each switched on must have its next run in Redis, not long overdue, and the running waves
(soa.wave_progress): none may have members in flight that no worker has touched for WAVE_STALE_SECONDS. A problem
with either degrades the answer without failing it (the web still serves; workers re-arm the periodic jobs within a
minute and return a dead worker's members within seconds; when that does not happen, no worker runs). The Exchange
budget (writeback.exchange.shared_budget) is shared between worker processes through Redis; when Redis does not
answer, each process paces alone, which works but lets several workers overspend it: degraded, not down.

The result is kept for HEALTH_CACHE_SECONDS: load balancers and monitors poll often, from several places, and each
uncached call opens a Redis connection and binds to the directory with the service account. One check runs at a
time per process; callers arriving meanwhile wait for it and share its result.
"""

import logging
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from portal.redis_config import client_for, rq_queues
from soa.wave_progress import stalled_waves
from writeback.directory import DirectoryConfig, DirectoryError, ping
from writeback.exchange import shared_budget
from writeback.periodic import periodic_problems

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    ok: bool
    detail: str
    millis: float
    essential: bool = True  # False: when not ok, the portal is degraded, not down


class PeriodicWorkMissing(Exception):
    """A periodic job is missing from Redis or overdue; the message lists each."""


class WavesStalled(Exception):
    """A wave has members in flight that no worker has touched for a while; the message names each."""


class BudgetNotShared(Exception):
    """The Exchange budget cannot be shared through Redis: each worker process paces alone."""


def _timed(name: str, check, *, essential: bool = True) -> ComponentStatus:
    started = time.perf_counter()
    try:
        detail = check()
        ok = True
    except (
        DatabaseError, redis.RedisError, DirectoryError, OSError, PeriodicWorkMissing, WavesStalled, BudgetNotShared,
    ) as exc:  # fmt: skip
        ok, detail = False, str(exc) or exc.__class__.__name__
    except Exception as exc:  # noqa: BLE001 - a health check reports any failure as "down" instead of a 500
        logger.exception("Health check of %s failed unexpectedly", name)
        ok, detail = False, f"{exc.__class__.__name__}: {exc}"
    return ComponentStatus(name, ok, detail, round((time.perf_counter() - started) * 1000, 1), essential)


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _redis() -> str:
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    # The same server the queues use: REDIS_URL, or the master the Sentinels name (portal.redis_config).
    queue = rq_queues(settings.REDIS_URL, getattr(settings, "REDIS_SENTINEL", None))["default"]
    client = client_for(queue, timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return "PONG"


def _directory() -> str:
    config = DirectoryConfig.from_settings()
    ping(
        DirectoryConfig(
            url=config.url,
            bind_dn=config.bind_dn,
            password_file=config.password_file,
            base_dn=config.base_dn,
            ca_file=config.ca_file,
            timeout=min(config.timeout, settings.HEALTH_CHECK_TIMEOUT_SECONDS),
        )
    )
    return config.url


def _periodic() -> str:
    problems = periodic_problems()
    if problems:
        raise PeriodicWorkMissing("; ".join(problems))
    return "every periodic job is scheduled"


def _waves() -> str:
    stalled = stalled_waves()
    if stalled:
        raise WavesStalled(
            "; ".join(
                f"stalled: wave “{wave.name}” (#{wave.wave_id}): no worker has touched it for {wave.seconds} s, "
                f"{wave.running} member(s) in flight"
                for wave in stalled
            )
        )
    return "no wave is stalled"


def _exchange_budget() -> str:
    if not settings.EXO_SHARED_BUDGET:
        return "per process: EXO_SHARED_BUDGET is off, each worker paces from its own responses"
    key = shared_budget.budget_key(settings.EXO_TENANT, settings.ENTRA_CLIENT_ID)
    queue = rq_queues(settings.REDIS_URL, getattr(settings, "REDIS_SENTINEL", None))["default"]
    client = client_for(queue, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)
    try:
        state = shared_budget.SharedBudget(lambda: client, key).state()
    except redis.RedisError as exc:
        raise BudgetNotShared(
            f"per process: Redis does not answer ({exc.__class__.__name__}), so each worker paces from its own "
            "responses and several workers can overspend the budget together"
        ) from exc
    finally:
        client.close()
    if not state:
        return "shared in Redis: no budget announced by Exchange, or it is full"
    left = max(float(state["tokens"]), 0.0)
    rate = f", refilling at {float(state['rate']):.3g}/s" if "rate" in state else ""
    return f"shared in Redis: about {left:.0f} of {state['limit']} requests left{rate}"


def _not_checked() -> str:
    raise PeriodicWorkMissing("not checked: Redis does not answer")


_lock = threading.Lock()
_last: tuple[tuple, float, list[ComponentStatus]] | None = None


def _checked_configuration() -> tuple:
    # A result only answers for the configuration it was taken with (tests and reloads change it).
    return (
        connection.settings_dict.get("NAME"),
        settings.REDIS_URL,
        repr(getattr(settings, "REDIS_SENTINEL", None)),
        repr(settings.RQ_QUEUES),
        settings.LDAP_URL,
        settings.LDAP_BIND_DN,
        settings.LDAP_PASSWORD_FILE,
        settings.LDAP_BASE_DN,
        settings.LDAP_CA_FILE,
        settings.HEALTH_CHECK_TIMEOUT_SECONDS,
        settings.EXO_SHARED_BUDGET,
        settings.EXO_TENANT,
        settings.ENTRA_CLIENT_ID,
    )


def check_all() -> list[ComponentStatus]:
    """Every component's status, at most HEALTH_CACHE_SECONDS old (0: checked on every call)."""
    global _last
    configuration = _checked_configuration()
    with _lock:
        if _last is not None:
            taken_with, taken_at, statuses = _last
            if taken_with == configuration and time.monotonic() - taken_at < settings.HEALTH_CACHE_SECONDS:
                return statuses
        statuses = [_timed("database", _database), _timed("redis", _redis), _timed("directory", _directory)]
        # Only asked of a Redis that answered the bounded ping: the queues' connection has no timeout of its own.
        periodic = _periodic if statuses[1].ok else _not_checked
        statuses.append(_timed("periodic", periodic, essential=False))
        statuses.append(_timed("waves", _waves, essential=False))
        statuses.append(_timed("exchange budget", _exchange_budget, essential=False))
        _last = (configuration, time.monotonic(), statuses)
        return statuses
