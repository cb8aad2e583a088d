"""Where the portal's Redis is: one URL, or a master found through Redis Sentinel.

The settings module builds RQ_QUEUES with ``rq_queues`` and the health check builds the same configuration from the
same settings and opens its short-lived client with ``client_for``, so the web, the workers and /healthz always talk
to the same server. django-rq picks the connection by the keys present (a queue holding "URL" ignores "SENTINELS"), so a
Sentinel queue carries no URL at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.sentinel import Sentinel

# The portal's two queues and how long a job of each may run: "writeback" carries AD writes in small batches, so they
# never wait behind an import on "default".
QUEUE_TIMEOUTS: dict[str, int] = {"default": 3600, "writeback": 600}
SENTINEL_DEFAULT_PORT = 26379
# Seconds any call on a Sentinel configuration's connections may take, to a Redis server or to a Sentinel, unless
# REDIS_SOCKET_TIMEOUT says otherwise. A master whose host hangs or drops off the network keeps its connections open
# and answers nothing; a failover does not end a call waiting on one, so without a bound a web request would wait for
# ever (tests/deploy/test_sentinel_failover.py). The portal's calls take milliseconds; rq gives its workers' blocking
# wait for a job a longer timeout of its own.
SOCKET_TIMEOUT = 5.0


class RedisConfigError(ValueError):
    """A Redis setting that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class SentinelSettings:
    sentinels: list[tuple[str, int]]
    master: str
    db: int = 0
    password: str = ""
    sentinel_password: str = ""
    socket_timeout: float | None = SOCKET_TIMEOUT


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """``"host1:26379,host2:26379"`` as django-rq wants it: ``[("host1", 26379), ("host2", 26379)]``. A missing
    port is Sentinel's own (26379); an IPv6 address is written in brackets (``[fd00::1]:26379``)."""
    sentinels = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
        elif item.count(":") == 1:
            host, port_text = item.split(":")
        else:
            host, port_text = item, ""
        if not host or (port_text and not port_text.isdigit()):
            raise RedisConfigError(f"REDIS_SENTINELS: “{item}” is not host:port")
        port = int(port_text) if port_text else SENTINEL_DEFAULT_PORT
        if not 0 < port < 65536:
            raise RedisConfigError(f"REDIS_SENTINELS: “{item}” has no valid port")
        sentinels.append((host, port))
    return sentinels


def sentinel_settings(
    sentinels: str, master: str, *, db: int = 0, password: str = "", sentinel_password: str = "",
    socket_timeout: float | None = SOCKET_TIMEOUT,
) -> SentinelSettings | None:  # fmt: skip
    """The Sentinel settings when REDIS_SENTINELS is given (None: the portal uses REDIS_URL)."""
    hosts = parse_sentinels(sentinels)
    if not hosts:
        if master:
            raise RedisConfigError("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS names no Sentinel")
        return None
    if not master:
        raise RedisConfigError("REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the master Sentinel monitors")
    if socket_timeout is not None and not socket_timeout > 0:
        # 0 would make redis-py's sockets non-blocking: every call would fail at once.
        raise RedisConfigError(f"REDIS_SOCKET_TIMEOUT: {socket_timeout} is not a number of seconds above 0")
    return SentinelSettings(hosts, master, db, password, sentinel_password, socket_timeout)


def rq_queues(redis_url: str, sentinel: SentinelSettings | None) -> dict[str, dict[str, Any]]:
    """RQ_QUEUES for django-rq: every queue on REDIS_URL, or on the master Sentinel names."""
    if sentinel is None:
        return {name: {"URL": redis_url, "DEFAULT_TIMEOUT": timeout} for name, timeout in QUEUE_TIMEOUTS.items()}
    connection: dict[str, Any] = {
        "SENTINELS": sentinel.sentinels,
        "MASTER_NAME": sentinel.master,
        "DB": sentinel.db,
        "SOCKET_TIMEOUT": sentinel.socket_timeout,
    }
    if sentinel.password:
        connection["PASSWORD"] = sentinel.password
    # The Sentinels' connections are django-rq's SENTINEL_KWARGS alone: SOCKET_TIMEOUT bounds only the master's.
    sentinel_side: dict[str, Any] = {}
    if sentinel.socket_timeout is not None:
        sentinel_side.update(socket_timeout=sentinel.socket_timeout, socket_connect_timeout=sentinel.socket_timeout)
    if sentinel.sentinel_password:
        sentinel_side["password"] = sentinel.sentinel_password
    if sentinel_side:
        connection["SENTINEL_KWARGS"] = sentinel_side
    return {name: {**connection, "DEFAULT_TIMEOUT": timeout} for name, timeout in QUEUE_TIMEOUTS.items()}


def client_for(queue: dict[str, Any], *, timeout: float) -> redis.Redis:
    """A client of the server a queue configuration names, whose every call gives up after ``timeout`` seconds (for
    the health check: a hung Redis or Sentinel must not hang the answer)."""
    bounded = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if "URL" in queue:
        return redis.Redis.from_url(queue["URL"], **bounded)
    sentinel = Sentinel(
        queue["SENTINELS"],
        sentinel_kwargs={**queue.get("SENTINEL_KWARGS", {}), **bounded},
        db=queue.get("DB", 0),
        password=queue.get("PASSWORD"),
        **bounded,
    )
    return sentinel.master_for(queue["MASTER_NAME"])
