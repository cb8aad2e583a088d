"""A rollback wave meets an AD user whose proxyAddresses contradict themselves: the member fails cleanly, with a
reason naming the entry and both values, and the mailbox keeps its authority in the cloud. End to end against a
private directory and Exchange Online emulator, through a real RQ worker."""

import ldap3
import pytest

from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox
from tests.exchange_fixtures import private_tenant
from tests.writeback.test_wave_revert import cast, client, moved_to_cloud, rollback_of, run_wave
from writeback import wave_jobs
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=12, seed=31) as (directory, exchange, _report):
        yield directory, exchange


@pytest.fixture
def exchange(tenant, settings):
    settings.WAVE_QUIET_PERIOD_HOURS = 0
    import django_rq

    django_rq.get_queue(wave_jobs.QUEUE).empty()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    return tenant[1]


def test_a_rollback_member_whose_ad_entry_holds_an_address_as_primary_and_secondary_fails_cleanly(
    tenant, exchange, make_user
):
    """ "SMTP:" in upper case marks the primary reply address, "smtp:" a secondary (exchange-facts §3: MS-OXLDAP
    2.2.3.4; Exchange 2003 SDK): one address under both is a contradiction only a person can resolve. The wave
    runner fails the member on the permanent directory error instead of crashing on a ValueError, and leaves the
    flag alone, so Entra Connect's next sync cannot copy the contradiction over the cloud's values."""
    directory, _ = tenant
    people = cast(make_user)
    wave, (mailbox,) = moved_to_cloud(people, 1, "To the cloud")
    contradiction = ["SMTP:straße@corp.example.com", "smtp:STRASSE@corp.example.com"]
    with ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True) as connection:
        assert connection.modify(mailbox.dn, {"proxyAddresses": [(ldap3.MODIFY_REPLACE, contradiction)]}), (
            connection.result
        )

    rollback = run_wave(people, rollback_of(people, wave))
    member = rollback.members.get()
    assert rollback.state == WaveState.COMPLETED_WITH_ERRORS and member.state == MemberState.FAILED
    assert member.attempts == 1  # permanent: not retried
    assert "Copying the cloud values into AD failed" in member.last_error
    assert all(value in member.last_error for value in contradiction)
    assert "OU=" in member.last_error.upper() and mailbox.dn.split(",")[0].lower() in member.last_error.lower()
    assert client().get_mailbox(str(mailbox.exo_object_id))["IsExchangeCloudManaged"] is True
    assert Mailbox.objects.get(pk=mailbox.pk).authority == Authority.CLOUD
