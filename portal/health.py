"""Component checks behind /healthz: the database, Redis and the directory, each bounded in time, and the periodic
jobs (writeback.periodic): each switched on must have its next run in Redis, not long overdue, and the running waves
(soa.wave_progress): none may have members in flight that no worker has touched for WAVE_STALE_SECONDS. A problem
with either degrades the answer without failing it (the web still serves; workers re-arm the periodic jobs within a
minute and return a dead worker's members within seconds; when that does not happen, no worker runs).

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


def _timed(name: str, check, *, essential: bool = True) -> ComponentStatus:
    started = time.perf_counter()
    try:
        detail = check()
        ok = True
    except (DatabaseError, redis.RedisError, DirectoryError, OSError, PeriodicWorkMissing, WavesStalled) as exc:
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
        _last = (configuration, time.monotonic(), statuses)
        return statuses
