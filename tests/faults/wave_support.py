"""What the fault tests of running waves share (no tests here): a tenant of the module's own with its inventory read,
a dead worker's claim, and the audit events of members."""

import datetime as dt

import django_rq
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from portal.models import AuditEvent
from soa.choices import MemberState
from soa.models import PilotWave, WaveMember
from tests.exchange_fixtures import private_tenant
from writeback import wave_jobs
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun


def tenant_fixtures(*, users: int, seed: int, postgresql_only: bool = False):
    """The fixtures ``tenant`` (module-scoped: a directory and an emulator of the module's own) and ``exchange`` (the
    emulator as seeded, the wave queue empty, the inventory read from it, the quiet period off since the seed has
    just written every mailbox). ``postgresql_only``: skip where worker processes cannot share the test database."""

    @pytest.fixture(scope="module")
    def tenant():
        with private_tenant(users=users, seed=seed) as (_, exchange, _report):
            yield exchange

    @pytest.fixture
    def exchange(tenant, settings):
        if postgresql_only and connection.vendor != "postgresql":
            pytest.skip("worker processes share the test database only on PostgreSQL (CI runs it there)")
        tenant.reset()
        settings.WAVE_QUIET_PERIOD_HOURS = 0
        settings.HEALTH_CACHE_SECONDS = 0  # a test that reads /healthz twice sees each state
        django_rq.get_queue(wave_jobs.QUEUE).empty()
        run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
        assert execute(claim(run.pk)).state == InventoryRun.State.DONE
        yield tenant
        tenant.reset()

    return tenant, exchange


def exchange_client() -> ExchangeOnlineClient:
    return ExchangeOnlineClient(ExchangeConfig.from_settings())


def die_after_claiming(wave: PilotWave, *, applied: int) -> list[WaveMember]:
    """What a worker SIGKILLed mid-batch leaves: the wave's batch claimed (RUNNING), the first ``applied`` members
    flipped in Exchange without their result recorded, and a heartbeat that stopped WAVE_STALE_SECONDS + 1 ago."""
    django_rq.get_queue(wave_jobs.QUEUE).empty()  # the dead worker had taken the batch's job
    claimed = wave_jobs.claim_batch(wave.pk)
    client = exchange_client()
    for member in claimed[:applied]:
        client.set_mailbox(str(member.mailbox.exo_object_id), IsExchangeCloudManaged=True, verify=True)
    return claimed


def heartbeat_stops(wave: PilotWave) -> None:
    """Time passes for a dead worker's members: their claim and last heartbeat are now older than
    WAVE_STALE_SECONDS."""
    then = timezone.now() - dt.timedelta(seconds=settings.WAVE_STALE_SECONDS + 1)
    WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING).update(started_at=then, heartbeat_at=then)


def member_events(member: WaveMember, action: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(action=action, object_type="soa.wavemember", object_id=str(member.pk)).order_by("id")
    )
