"""The test stack: real slapd, real Redis, the configured database (PostgreSQL when DATABASE_URL is set).

Session fixtures start a private slapd and, unless REDIS_URL is given, a private redis-server, and point the
portal's settings at them. Nothing here is mocked: tests talk to these processes over loopback.
"""

import os

# Local-use defaults, set before Django reads its settings (pytest-django finishes Django's setup after
# the conftests load): no TLS redirect and no secure-only cookies for live_server's plain HTTP.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")

from django.conf import settings  # noqa: E402

settings.DATABASES  # noqa: B018  (loads settings now, so pytest-django sets Django up in pytest_configure)

import pytest  # noqa: E402

pytest_plugins = ["tests.exchange_fixtures"]
import redis  # noqa: E402

from sandbox.directory import SandboxDirectory  # noqa: E402
from sandbox.redis_server import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def directory():
    """A private AD-shaped slapd for the whole session, with a handful of generated users."""
    with SandboxDirectory.start(users=20) as instance:
        yield instance


@pytest.fixture(scope="session")
def redis_url():
    """REDIS_URL when the environment gives one, else a private redis-server started for this session."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    with RedisServer.start() as server:
        yield server.url


@pytest.fixture(scope="session", autouse=True)
def _portal_points_at_test_stack(directory, redis_url):
    """Point the portal at the session's slapd and Redis for every test."""
    settings.LDAP_URL = directory.url
    settings.LDAP_BIND_DN = directory.bind_dn
    settings.LDAP_PASSWORD_FILE = str(directory.password_file)
    settings.LDAP_BASE_DN = directory.base_dn
    settings.REDIS_URL = redis_url
    settings.RQ_QUEUES = {name: {**config, "URL": redis_url} for name, config in settings.RQ_QUEUES.items()}
    yield


@pytest.fixture(autouse=True)
def _forget_killed_workers_jobs():
    """After a test that SIGKILLed a worker, nothing it left in Redis may fail a later test (worker_process)."""
    yield
    from tests.writeback.worker_process import forget_killed_jobs

    forget_killed_jobs()


@pytest.fixture(autouse=True)
def _audit_heads_per_test(settings, tmp_path):
    """Each test publishes the audit chain's heads to a file of its own: heads left by another test (whose events the
    database has since forgotten) would read as a truncated chain."""
    settings.AUDIT_HEAD_FILE = str(tmp_path / "audit-heads.jsonl")
    settings.AUDIT_HEAD_SYSLOG = ""


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    # Every test user gets a password; the production hasher costs a third of a second each time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _audit_table_flushable():
    """Let Django empty the audit table after transactional tests on SQLite.

    After a transactional test (live_server, transactional_db) Django flushes every table. PostgreSQL's flush
    is a TRUNCATE, which the append-only triggers allow; SQLite's is a DELETE, which they refuse. On SQLite
    the flush therefore drops the triggers first and puts them back in the same transaction.
    """
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        yield
        return
    from django.db.backends.sqlite3.base import DatabaseOperations

    from portal import audit_triggers

    original = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, **kwargs):
        statements = original(self, style, tables, **kwargs)
        if audit_triggers.TABLE not in tables:
            return statements
        return (
            audit_triggers.statements("sqlite", install=False)
            + statements
            + audit_triggers.statements("sqlite", install=True)
        )

    DatabaseOperations.sql_flush = sql_flush
    yield
    DatabaseOperations.sql_flush = original


PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def make_user(db):
    """Create an active user holding ``roles`` (tenant-wide unless ``scopes`` are given)."""
    from portal.models import User
    from portal.services import role_assign

    def factory(username: str, *roles, scopes: tuple[str, ...] = ()):
        user = User.objects.create_user(username=username, password=PASSWORD)
        for role in roles:
            role_assign(actor=None, user=user, role=role, tenant_wide=not scopes, scopes=scopes)
        return user

    return factory


@pytest.fixture(autouse=True)
def _fresh_exchange_budget():
    """Each test starts without what an earlier test's throttle taught the Exchange budget shared in Redis
    (writeback.exchange.shared_budget) about the tenant the portal points at: that throttle is gone."""
    from tests.exchange_fixtures import forget_shared_budget

    forget_shared_budget(tenant=settings.EXO_TENANT)
    yield


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache: ids repeat between tests, so a key built from one could meet another
    test's entry (the OU picker's tree is cached per user)."""
    from django.core.cache import cache

    cache.clear()
    yield
