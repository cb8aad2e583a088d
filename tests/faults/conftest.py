"""The fault suite's own components: a private redis-server per test that the test may stop, start again (empty, as
the demo's Redis comes back) or flush, never the session's Redis that other tests and sessions share."""

import pytest
from django.conf import settings as django_settings

from sandbox.redis_server import RedisServer


class PrivateRedis:
    """A redis-server of the test's own on a fixed port, so a restart is the same address with no data."""

    def __init__(self) -> None:
        self.server = RedisServer.start()
        self.port = self.server.port
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = RedisServer.start(port=self.port)

    @property
    def running(self) -> bool:
        return self.server.process.poll() is None


@pytest.fixture
def private_redis(settings):
    """A private Redis the portal's queues, health check and workers use for this test (restored after it)."""
    redis = PrivateRedis()
    settings.REDIS_URL = redis.url
    settings.RQ_QUEUES = {name: {**config, "URL": redis.url} for name, config in django_settings.RQ_QUEUES.items()}
    settings.HEALTH_CACHE_SECONDS = 0  # each /healthz call checks again
    yield redis
    redis.stop()
