"""Revert without loss, end to end against a private directory and Exchange Online emulator, through a real RQ worker.

The proof is the emulator's sync tick (Entra Connect): once a mailbox's flag is back to false, a tick writes AD's
Exchange attributes over the cloud's. After a rollback wave and a tick, the cloud still holds every edit made
there while it was the authority; the same scenario without the copy into AD loses them, as Microsoft documents.
"""

import re
import uuid

import pytest
from django.utils import timezone

from portal.models import AuditEvent
from soa.choices import Authority, MemberState, WaveDirection, WaveState
from soa.models import Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.wave_rollback import wave_rollback_create
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from soa.values import exo_values
from tests.exchange_fixtures import private_tenant
from tests.soa.test_wave_support import cast, new_wave, set_mailbox_calls, work
from writeback import wave_jobs, wave_revert
from writeback.directory import DirectoryClient, DirectoryConfig
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

pytestmark = pytest.mark.django_db(transaction=True)

# Properties that change on every write or belong to the flag itself: the rest must survive the revert.
_VOLATILE = {"WhenChangedUTC", "IsExchangeCloudManaged"}
_USED: set[str] = set()  # UPNs already moved by a test of this module


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=24, seed=29) as (_, exchange, _report):
        yield exchange


@pytest.fixture
def exchange(tenant, settings):
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed and the first wave have just written every mailbox
    import django_rq

    django_rq.get_queue(wave_jobs.QUEUE).empty()
    import_inventory()
    return tenant


@pytest.fixture
def people(make_user):
    return cast(make_user)


def import_inventory() -> None:
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE


def client() -> ExchangeOnlineClient:
    return ExchangeOnlineClient(ExchangeConfig.from_settings())


def run_wave(people, wave: PilotWave) -> PilotWave:
    wave_submit(actor=wave.created_by, wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=wave.pk)
    work()
    wave.refresh_from_db()
    return wave


def moved_to_cloud(people, count: int, name: str) -> tuple[PilotWave, list[Mailbox]]:
    """``count`` mailboxes no earlier test of the module used (the tenant outlives each test's database), moved to
    the cloud by a completed wave."""
    mailboxes = list(
        Mailbox.objects.filter(
            authority=Authority.ON_PREM, in_exo=True, in_ad=True, recipient_type_details="UserMailbox"
        )
        .exclude(upn__in=_USED)
        .order_by("upn")[:count]
    )
    assert len(mailboxes) == count, "the tenant has run out of unused mailboxes"
    _USED.update(mailbox.upn for mailbox in mailboxes)
    wave = run_wave(people, new_wave(people["op"], *mailboxes, name=name, batch_size=4, max_rate=50.0))
    assert wave.state == WaveState.COMPLETED
    return wave, mailboxes


def edit_in_the_cloud(mailboxes: list[Mailbox]) -> dict[str, dict]:
    """Edits that exist only in Exchange Online (nothing writes them back); returns each mailbox as it then is."""
    exo = client()
    for index, mailbox in enumerate(mailboxes):
        domain = mailbox.primary_smtp.partition("@")[2]
        exo.set_mailbox(
            str(mailbox.exo_object_id),
            verify=True,
            CustomAttribute5=f"cloud-only {index}",
            CustomAttribute1="",
            ExtensionCustomAttribute2=["cloud", f"only-{index}"],
            HiddenFromAddressListsEnabled=True,
            EmailAddresses={"Add": [f"smtp:cloud-alias-{uuid.uuid4().hex[:8]}@{domain}"]},
        )
    return {mailbox.upn: exo.get_mailbox(str(mailbox.exo_object_id)) for mailbox in mailboxes}


def comparable(mailbox: dict) -> dict:
    values = {name: value for name, value in exo_values(mailbox).items() if name not in _VOLATILE}
    return {name: sorted(value) if isinstance(value, list) else value for name, value in values.items()}


def rollback_of(people, wave: PilotWave) -> PilotWave:
    return wave_rollback_create(actor=people["op"], wave_id=wave.pk)


def test_a_rollback_copies_the_cloud_values_into_ad_first_so_a_sync_loses_nothing(exchange, people):
    wave, mailboxes = moved_to_cloud(people, 5, "To the cloud A")
    before = edit_in_the_cloud(mailboxes)
    sets_before = set_mailbox_calls(exchange)

    rollback = run_wave(people, rollback_of(people, wave))
    assert rollback.state == WaveState.COMPLETED and rollback.direction == WaveDirection.TO_ON_PREM
    assert set_mailbox_calls(exchange) - sets_before == 5  # one flip each; the copy writes only to AD
    exchange.sync()

    exo = client()
    for mailbox in mailboxes:
        after = exo.get_mailbox(str(mailbox.exo_object_id))
        assert after["IsExchangeCloudManaged"] is False
        assert comparable(after) == comparable(before[mailbox.upn])
    # AD holds them too, and the portal's picture of AD says so.
    with DirectoryClient(DirectoryConfig.from_settings()) as directory:
        entry = directory.read_exchange_attributes(mailboxes[0].ad_guid)
    assert entry["extensionAttribute5"] == "cloud-only 0" and entry["msExchHideFromAddressLists"] is True
    moera = re.compile(r"@[^.@]+\.onmicrosoft\.com$", re.IGNORECASE)  # not the routing address (.mail.onmicrosoft)
    assert not any(moera.search(address) for address in entry["proxyAddresses"])
    first = Mailbox.objects.get(pk=mailboxes[0].pk)
    assert first.authority == Authority.ON_PREM and first.ad_values["CustomAttribute5"] == "cloud-only 0"
    # Each member's audit event says what was written into AD, with the values it replaced.
    done = AuditEvent.objects.filter(action="soa.wave.member_done", object_type="soa.wavemember").order_by("-id")[0]
    written = done.after["ad_written"]
    assert written["after"]["extensionAttribute5"].startswith("cloud-only")
    assert written["before"]["extensionAttribute5"] != written["after"]["extensionAttribute5"]


def test_without_the_copy_the_same_revert_loses_the_cloud_edits(exchange, people):
    wave, mailboxes = moved_to_cloud(people, 3, "To the cloud B")
    before = edit_in_the_cloud(mailboxes)
    rollback = rollback_of(people, wave)
    wave_submit(actor=people["op"], wave_id=rollback.pk)
    wave_approve(actor=people["approver"], wave_id=rollback.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=rollback.pk)
    import django_rq

    django_rq.get_queue(wave_jobs.QUEUE).empty()  # run it here, with the copy switched off
    while wave_jobs.run_batch(rollback.pk, copy_to_ad=False)["claimed"]:
        pass
    assert wave_jobs.settle(rollback.pk) == "completed"
    exchange.sync()

    exo = client()
    for index, mailbox in enumerate(mailboxes):
        after = exo.get_mailbox(str(mailbox.exo_object_id))
        assert after["IsExchangeCloudManaged"] is False
        assert after["CustomAttribute5"] != f"cloud-only {index}"  # AD's value came back over the edit
        assert comparable(after) != comparable(before[mailbox.upn])


def test_an_edit_landing_between_the_copy_and_the_flip_is_copied_too(exchange, people, monkeypatch):
    wave, mailboxes = moved_to_cloud(people, 1, "To the cloud C")
    edit_in_the_cloud(mailboxes)
    real_copy = wave_jobs.copy_cloud_to_ad
    calls = []

    def copy_then_edit(directory, guid, mailbox):
        copied = real_copy(directory, guid, mailbox)
        if not calls:  # someone edits the mailbox in the cloud just after the portal's copy
            client().set_mailbox(str(mailboxes[0].exo_object_id), CustomAttribute7="late edit", verify=True)
        calls.append(copied)
        return copied

    monkeypatch.setattr(wave_jobs, "copy_cloud_to_ad", copy_then_edit)
    run_wave(people, rollback_of(people, wave))
    assert len(calls) == 2  # the flip's re-read showed the late edit, so it was copied once more
    exchange.sync()
    assert client().get_mailbox(str(mailboxes[0].exo_object_id))["CustomAttribute7"] == "late edit"


def test_when_ad_does_not_take_the_values_the_flag_stays_in_the_cloud(exchange, people, monkeypatch):
    wave, mailboxes = moved_to_cloud(people, 1, "To the cloud D")
    edit_in_the_cloud(mailboxes)
    sets_before = set_mailbox_calls(exchange)
    # AD answers the write but keeps its old values (a rule, another writer): the read-back comparison must notice.
    monkeypatch.setattr(DirectoryClient, "apply_desired", lambda self, guid, desired, verify=True: ({}, {}))

    rollback = run_wave(people, rollback_of(people, wave))
    member = rollback.members.get()
    assert rollback.state == WaveState.COMPLETED_WITH_ERRORS and member.state == MemberState.FAILED
    assert "AD still differs from Exchange Online" in member.last_error and "CustomAttribute5" in member.last_error
    assert set_mailbox_calls(exchange) == sets_before  # no flag was sent back
    assert client().get_mailbox(str(mailboxes[0].exo_object_id))["IsExchangeCloudManaged"] is True


def test_a_mailbox_already_reverted_by_an_earlier_claim_is_recorded_without_a_second_write(exchange, people):
    wave, mailboxes = moved_to_cloud(people, 1, "To the cloud E")
    rollback = rollback_of(people, wave)
    wave_submit(actor=people["op"], wave_id=rollback.pk)
    wave_approve(actor=people["approver"], wave_id=rollback.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=rollback.pk)
    # A worker copied, flipped and died before recording: the member is claimed again after the sweep.
    client().set_mailbox(str(mailboxes[0].exo_object_id), IsExchangeCloudManaged=False, verify=True)
    WaveMember.objects.filter(wave=rollback).update(started_at=timezone.now())
    sets_before = set_mailbox_calls(exchange)
    work()
    rollback.refresh_from_db()
    assert rollback.state == WaveState.COMPLETED
    assert set_mailbox_calls(exchange) == sets_before


def test_desired_ad_values_leave_out_the_moera_and_keep_ads_recipient_type_number():
    mailbox = {
        "EmailAddresses": [
            "SMTP:a@corp.example.com",
            "smtp:a@contoso.onmicrosoft.com",
            "smtp:b@contoso.mail.onmicrosoft.com",
        ],
        "CustomAttribute3": "",
        "ExtensionCustomAttribute1": ["x"],
        "HiddenFromAddressListsEnabled": True,
        "RecipientTypeDetails": "SharedMailbox",
        "WindowsEmailAddress": "a@corp.example.com",
        "Alias": "a",
    }
    desired = wave_revert.desired_ad_values(mailbox, {"msExchRecipientTypeDetails": 34359738368})
    assert desired["proxyAddresses"] == ["SMTP:a@corp.example.com", "smtp:b@contoso.mail.onmicrosoft.com"]
    assert desired["extensionAttribute3"] is None  # cleared in the cloud: cleared in AD
    assert desired["msExchExtensionCustomAttribute1"] == ["x"] and desired["msExchHideFromAddressLists"] is True
    assert desired["msExchRecipientTypeDetails"] == 34359738368 and desired["mailNickname"] == "a"
    assert "msExchRecipientDisplayType" not in desired and "extensionAttribute4" not in desired
    # A type converted in the cloud gets its remote-mailbox number in AD.
    converted = wave_revert.desired_ad_values(mailbox, {"msExchRecipientTypeDetails": 2147483648})
    assert converted["msExchRecipientTypeDetails"] == 34359738368
