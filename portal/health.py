"""Component checks behind /healthz: the database, Redis and the directory, each bounded in time."""

import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, connection

from writeback.directory import DirectoryConfig, DirectoryError, ping

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    ok: bool
    detail: str
    millis: float


def _timed(name: str, check) -> ComponentStatus:
    started = time.perf_counter()
    try:
        detail = check()
        ok = True
    except (DatabaseError, redis.RedisError, DirectoryError, OSError) as exc:
        ok, detail = False, str(exc) or exc.__class__.__name__
    except Exception as exc:  # noqa: BLE001 - a health check reports any failure as "down" instead of a 500
        logger.exception("Health check of %s failed unexpectedly", name)
        ok, detail = False, f"{exc.__class__.__name__}: {exc}"
    return ComponentStatus(name, ok, detail, round((time.perf_counter() - started) * 1000, 1))


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _redis() -> str:
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
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


def check_all() -> list[ComponentStatus]:
    return [_timed("database", _database), _timed("redis", _redis), _timed("directory", _directory)]
