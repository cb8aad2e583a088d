"""Redis Sentinel in the queue settings (portal/redis_config.py): parsed from the environment, handed to django-rq in
the keys it documents (SENTINELS, MASTER_NAME, DB, PASSWORD, SOCKET_TIMEOUT, SENTINEL_KWARGS), and used by the health
check too. The clients are built, never connected (redis-py connects on the first command), except in the last test,
which runs a job through a live Sentinel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django_rq.connection_utils import get_redis_connection
from redis.sentinel import SentinelConnectionPool

from portal.redis_config import (
    RedisConfigError,
    client_for,
    parse_sentinels,
    rq_queues,
    sentinel_settings,
)

ROOT = Path(__file__).resolve().parents[2]


def test_sentinels_are_parsed_into_host_port_pairs():
    assert parse_sentinels("redis-a:26379, redis-b:26380,,") == [("redis-a", 26379), ("redis-b", 26380)]
    assert parse_sentinels("redis-c") == [("redis-c", 26379)]  # Sentinel's own port when none is given
    assert parse_sentinels("[fd00::1]:26381,[fd00::2]") == [("fd00::1", 26381), ("fd00::2", 26379)]
    assert parse_sentinels("") == []


@pytest.mark.parametrize("value", ["redis-a:port", "redis-a:0", "redis-a:70000", ":26379", "[fd00::1]x"])
def test_a_sentinel_that_is_not_host_port_is_refused_naming_the_setting(value):
    with pytest.raises(RedisConfigError, match="REDIS_SENTINELS"):
        parse_sentinels(value)


def test_sentinels_without_a_master_name_or_the_reverse_are_refused():
    with pytest.raises(RedisConfigError, match="REDIS_SENTINEL_MASTER must name"):
        sentinel_settings("redis-a:26379", "")
    with pytest.raises(RedisConfigError, match="names no Sentinel"):
        sentinel_settings("", "portal")
    assert sentinel_settings("", "") is None


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_a_socket_timeout_that_is_not_above_zero_is_refused(timeout):
    with pytest.raises(RedisConfigError, match="REDIS_SOCKET_TIMEOUT"):
        sentinel_settings("redis-a:26379", "portal", socket_timeout=timeout)


def test_without_sentinels_every_queue_is_on_redis_url():
    queues = rq_queues("redis://cache.example:6379/2", None)
    assert queues == {
        "default": {"URL": "redis://cache.example:6379/2", "DEFAULT_TIMEOUT": 3600},
        "writeback": {"URL": "redis://cache.example:6379/2", "DEFAULT_TIMEOUT": 600},
    }


def test_with_sentinels_every_queue_uses_django_rqs_sentinel_keys_and_no_url():
    sentinel = sentinel_settings(
        "redis-a:26379,redis-b:26379", "portal", db=3, password="pw", sentinel_password="spw", socket_timeout=7.5
    )
    queues = rq_queues("redis://ignored:6379/0", sentinel)
    assert set(queues) == {"default", "writeback"}
    for name, timeout in (("default", 3600), ("writeback", 600)):
        # A queue holding URL would make django-rq ignore SENTINELS (connection_utils.get_redis_connection).
        assert "URL" not in queues[name]
        assert queues[name] == {
            "SENTINELS": [("redis-a", 26379), ("redis-b", 26379)],
            "MASTER_NAME": "portal",
            "DB": 3,
            "SOCKET_TIMEOUT": 7.5,
            "PASSWORD": "pw",
            # The Sentinels' own connections are bounded too (tests/deploy/test_sentinel_failover.py: a master that
            # hangs); django-rq hands SOCKET_TIMEOUT to the master's connections only.
            "SENTINEL_KWARGS": {"password": "spw", "socket_timeout": 7.5, "socket_connect_timeout": 7.5},
            "DEFAULT_TIMEOUT": timeout,
        }
    # django-rq turns it into a client of the master Sentinel names (built only: nothing is connected yet).
    connection = get_redis_connection(queues["default"])
    pool = connection.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "portal"
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["socket_timeout"] == 7.5
    sentinel_side = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinel_side["socket_timeout"] == 7.5 and sentinel_side["socket_connect_timeout"] == 7.5
    assert [s.connection_pool.connection_kwargs["host"] for s in pool.sentinel_manager.sentinels] == [
        "redis-a",
        "redis-b",
    ]


def test_the_health_checks_client_follows_the_queue_configuration_with_its_timeout():
    sentinel = sentinel_settings("redis-a:26379", "portal", password="pw", sentinel_password="spw")
    client = client_for(rq_queues("", sentinel)["default"], timeout=1.5)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "portal"
    assert pool.connection_kwargs["socket_timeout"] == 1.5 and pool.connection_kwargs["socket_connect_timeout"] == 1.5
    sentinel_side = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    # The health check's shorter bound wins over the queues' own on the Sentinel side as well.
    assert sentinel_side["socket_timeout"] == 1.5 and sentinel_side["socket_connect_timeout"] == 1.5
    assert sentinel_side["password"] == "spw"
    plain = client_for(rq_queues("redis://127.0.0.1:6399/4", None)["default"], timeout=0.5).connection_pool
    assert plain.connection_kwargs["port"] == 6399 and plain.connection_kwargs["db"] == 4
    assert plain.connection_kwargs["socket_timeout"] == 0.5


def _settings_in_a_fresh_process(tmp_path, **env) -> dict:
    script = "from django.conf import settings; import json; print(json.dumps(settings.RQ_QUEUES))"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DJANGO_"))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, "DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true", "PYTHONPATH": str(ROOT),
             "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}", **env},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_settings_read_the_sentinels_from_the_environment_and_the_password_from_a_file(tmp_path):
    password_file = tmp_path / "redis-password"
    password_file.write_text("from-a-file")
    queues = _settings_in_a_fresh_process(
        tmp_path,
        REDIS_SENTINELS="redis-a:26379,redis-b:26379",
        REDIS_SENTINEL_MASTER="portal",
        REDIS_PASSWORD_FILE=str(password_file),
        REDIS_DB="1",
    )
    assert queues["writeback"]["SENTINELS"] == [["redis-a", 26379], ["redis-b", 26379]]
    assert queues["writeback"]["MASTER_NAME"] == "portal" and queues["writeback"]["PASSWORD"] == "from-a-file"
    # Bounded unless REDIS_SOCKET_TIMEOUT says otherwise: a call to a master that hangs must not wait for ever.
    assert queues["default"]["DB"] == 1 and queues["default"]["SOCKET_TIMEOUT"] == 5.0
    assert queues["default"]["SENTINEL_KWARGS"] == {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
    assert _settings_in_a_fresh_process(tmp_path)["default"]["URL"] == "redis://127.0.0.1:6379/0"


def test_queues_web_health_and_a_worker_reach_redis_through_a_live_sentinel(tmp_path):
    """One redis-server and one Sentinel monitoring it (the test packages' redis-server, in --sentinel mode): a job
    queued through the Sentinel configuration is run by rq's worker, and the health check's client answers."""
    from sandbox.process import bind_free_port

    redis_port, sentinel_port = bind_free_port(), bind_free_port()
    (tmp_path / "sentinel.conf").write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor soa 127.0.0.1 {redis_port} 1\n"
    )
    servers = [
        subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL),
        subprocess.Popen(["redis-server", str(tmp_path / "sentinel.conf"), "--sentinel"], stdout=subprocess.DEVNULL),
    ]  # fmt: skip
    script = """
import time
import django
django.setup()
import django_rq
from rq import Worker
from portal.health import _redis
queue = django_rq.get_queue("writeback")
for _ in range(50):  # the Sentinel needs a moment to know its master
    try:
        queue.connection.ping()
        break
    except Exception:
        time.sleep(0.1)
job = queue.enqueue("builtins.len", "abcd")
Worker([queue], connection=queue.connection).work(burst=True)
job.refresh()
print(type(queue.connection.connection_pool).__name__, job.get_status().value, job.return_value(), _redis())
"""
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DJANGO_"))},
                 "DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true", "PYTHONPATH": str(ROOT),
                 "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
                 "REDIS_SENTINELS": f"127.0.0.1:{sentinel_port}", "REDIS_SENTINEL_MASTER": "soa"},
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-4:] == ["SentinelConnectionPool", "finished", "4", "PONG"], result.stdout
