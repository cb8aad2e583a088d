"""Inventory import against a seeded sandbox directory and the emulator: joins, one-sided objects, drift,
idempotent re-runs, incremental runs, failures, and the RQ path with a real worker."""

import datetime as dt
import uuid

import ldap3
import pytest
from django.utils import timezone
from rq import SimpleWorker

from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, Pairing
from soa.models import Mailbox, MailboxAddress
from tests.exchange_fixtures import private_tenant
from writeback.exchange import ExchangeConfig, ExchangeOnlineClient
from writeback.inventory import InventoryError, created_at, inventory_run_request
from writeback.inventory_pairing import source_anchor
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

USERS = 60


@pytest.fixture(scope="module")
def tenant():
    """A directory and an emulator of its own, seeded; the portal's settings point at them for the module."""
    with private_tenant(users=USERS, seed=7) as tenant:
        yield tenant


def _import(mode=InventoryRun.Mode.FULL) -> InventoryRun:
    run = inventory_run_request(actor=None, mode=mode, enqueue=False)
    return execute(claim(run.pk))


def _ad(directory):
    return ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)


def _snapshot():
    return list(Mailbox.objects.order_by("pk").values_list("pk", "exo_values", "ad_values", "drift", "version"))


@pytest.mark.django_db
def test_full_import_joins_both_sides_and_reports_what_does_not_match(tenant):
    directory, exchange, report = tenant
    run = _import()
    assert run.state == InventoryRun.State.DONE, run.error
    assert run.ad_read == USERS
    assert run.skipped_not_synced == report.cloud_only
    assert run.ad_only == report.missing_in_exo and run.exo_only == 0
    assert Mailbox.objects.count() == USERS
    assert (run.created, run.changed) == (USERS, 0)  # the Exchange pass completes rows, it does not change them
    assert run.drifted == report.cloud_edits + report.ad_edits
    both = Mailbox.objects.filter(in_ad=True, in_exo=True)
    assert both.count() == USERS - report.missing_in_exo
    for mailbox in both:
        assert mailbox.source_anchor and mailbox.pairing == Pairing.GRAPH  # no hybrid writeback in this tenant
        assert mailbox.exo_object_id is not None and mailbox.dn_norm.endswith("dc=corp,dc=example,dc=com")
    assert Mailbox.objects.filter(authority=Authority.CLOUD).count() == report.cloud_managed
    cloud_edited = Mailbox.objects.filter(has_drift=True, authority=Authority.CLOUD)
    assert cloud_edited.count() == report.cloud_edits
    assert all(set(m.drift) == {"EmailAddresses", "CustomAttribute10"} for m in cloud_edited)
    # Any alias finds its mailbox through the address table.
    sample = cloud_edited.first()
    assert MailboxAddress.objects.filter(mailbox=sample, address__endswith=".cloud@corp.example.com").exists()
    assert not Mailbox.objects.filter(upn__startswith="cloudroom").exists()
    assert AuditEvent.objects.filter(action="writeback.inventory.completed", object_id=str(run.pk)).exists()


@pytest.mark.django_db
def test_rerun_over_an_unchanged_tenant_changes_nothing(tenant):
    _import()
    before = _snapshot()
    again = _import()
    assert (again.created, again.changed) == (0, 0)
    assert again.unchanged == again.ad_read + again.exo_read - again.skipped_not_synced
    assert _snapshot() == before


@pytest.mark.django_db
def test_the_import_keeps_when_each_ad_object_was_created(tenant):
    """The tenant default's recent-creation blocker (writeback.tenant_default) reads it: createTimestamp, which AD
    constructs from whenCreated and OpenLDAP keeps itself."""
    _import()
    created = list(Mailbox.objects.filter(in_ad=True).values_list("ad_when_created", flat=True))
    assert created and all(when is not None for when in created)
    assert all(timezone.now() - dt.timedelta(days=1) < when <= timezone.now() for when in created)
    assert created_at({"whenCreated": "x", "createTimestamp": ["20261130120000Z"]}) == dt.datetime(
        2026, 11, 30, 12, tzinfo=dt.UTC
    )
    assert created_at({"createTimestamp": []}) is None and created_at({"createTimestamp": "garbage"}) is None


@pytest.mark.django_db
def test_join_by_consistency_guid(tenant):
    """A user moved from another forest keeps its old anchor in mS-DS-ConsistencyGuid; Entra anchors on that, and
    Graph's onPremisesImmutableId is its base64 (exchange-facts §3, §8)."""
    directory, exchange, _ = tenant
    guid, anchor = uuid.uuid4(), uuid.uuid4()
    dn = f"CN=Moved User,OU=Sales,{directory.users_dn}"
    with _ad(directory) as connection:
        assert connection.add(dn, ["top", "person", "organizationalPerson", "user"], {
            "cn": "Moved User", "sn": "User", "objectGUID": guid.bytes_le, "mS-DS-ConsistencyGuid": anchor.bytes_le,
            "sAMAccountType": 805306368,
            "userPrincipalName": "moved.user@corp.example.com", "mailNickname": "moved.user",
            "mail": "moved.user@corp.example.com", "proxyAddresses": ["SMTP:moved.user@corp.example.com"],
            "msExchRecipientTypeDetails": 2147483648, "displayName": "Moved User",
        }), connection.result  # fmt: skip
    try:
        exchange.sync()
        run = _import()
        mailbox = Mailbox.objects.get(ad_guid=guid)
        assert mailbox.source_anchor == source_anchor({"mS-DS-ConsistencyGuid": anchor.bytes_le})
        assert mailbox.pairing == Pairing.GRAPH
        assert mailbox.in_ad and mailbox.in_exo and mailbox.exo_object_id is not None
        assert run.exo_only == 0 and Mailbox.objects.count() == USERS + 1
    finally:
        with _ad(directory) as connection:
            connection.delete(dn)
        exchange.sync()


@pytest.mark.django_db
def test_incremental_run_picks_up_a_change_on_either_side(tenant):
    directory, exchange, _ = tenant
    _import()
    cloud = Mailbox.objects.filter(authority=Authority.CLOUD, has_drift=False, in_ad=True).order_by("pk").first()
    on_prem = Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True).order_by("pk").first()
    exo = ExchangeOnlineClient(ExchangeConfig.from_settings())
    exo.set_mailbox(str(cloud.exo_object_id), CustomAttribute4="edited in the cloud")
    with _ad(directory) as connection:
        connection.modify(on_prem.dn, {"extensionAttribute4": [(ldap3.MODIFY_REPLACE, ["edited on-premises"])]})
    try:
        run = _import(InventoryRun.Mode.INCREMENTAL)
        assert run.state == InventoryRun.State.DONE, run.error
        # AD's change stamps are exact; Exchange's WhenChangedUTC is to the second, so its read overlaps a little.
        assert run.ad_read == 1
        cloud.refresh_from_db()
        on_prem.refresh_from_db()
        assert cloud.exo_values["CustomAttribute4"] == "edited in the cloud" and "CustomAttribute4" in cloud.drift
        assert on_prem.ad_values["CustomAttribute4"] == "edited on-premises" and "CustomAttribute4" in on_prem.drift
    finally:
        with _ad(directory) as connection:
            connection.modify(on_prem.dn, {"extensionAttribute4": [(ldap3.MODIFY_DELETE, [])]})
        exo.set_mailbox(str(cloud.exo_object_id), CustomAttribute4="")


@pytest.mark.django_db
def test_incremental_without_a_full_run_is_refused_with_a_reason(tenant):
    run = _import(InventoryRun.Mode.INCREMENTAL)
    assert run.state == InventoryRun.State.FAILED
    assert "run a full import first" in run.error


@pytest.mark.django_db
def test_directory_down_fails_the_run_with_the_reason(tenant, settings):
    settings.LDAP_URL = "ldap://127.0.0.1:9"
    run = _import()
    assert run.state == InventoryRun.State.FAILED and run.error
    assert AuditEvent.objects.filter(action="writeback.inventory.failed", object_id=str(run.pk)).exists()
    assert not InventoryRun.objects.filter(state__in=InventoryRun.OPEN_STATES).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("process", [True, False], ids=["reader process", "reader thread"])
def test_exchange_refusing_the_read_fails_the_run_with_its_reason_after_the_directory_pass(
    tenant, settings, tmp_path, process
):
    """Exchange Online is read by a child process (or a thread) during the directory pass; its refusal reaches the
    run as the client's own error, with the message a person can act on, and nothing half-read is merged."""
    settings.INVENTORY_READ_PROCESS = process
    wrong = tmp_path / "secret"
    wrong.write_text("not-the-secret")
    settings.ENTRA_CLIENT_SECRET_FILE = str(wrong)
    settings.INVENTORY_GRAPH_PAIRING = False  # Graph would be refused first
    run = _import()
    assert run.state == InventoryRun.State.FAILED
    assert "refused a token" in run.error and "Invalid client secret" in run.error, run.error
    assert run.ad_read == USERS and run.exo_read == 0
    assert AuditEvent.objects.filter(action="writeback.inventory.failed", object_id=str(run.pk)).exists()
    assert Mailbox.objects.count() == USERS and not Mailbox.objects.filter(in_exo=True).exists()


@pytest.mark.django_db
def test_an_import_reading_exchange_in_a_thread_stores_what_the_reader_process_stores(tenant, settings):
    first = _import()
    stored = _snapshot()
    Mailbox.objects.all().delete()
    settings.INVENTORY_READ_PROCESS = False
    second = _import()
    assert first.state == second.state == InventoryRun.State.DONE
    assert (second.ad_read, second.exo_read, second.created) == (first.ad_read, first.exo_read, first.created)
    assert [row[1:] for row in _snapshot()] == [row[1:] for row in stored]


@pytest.mark.django_db
def test_only_an_administrator_may_start_and_only_one_at_a_time(tenant, make_user):
    with pytest.raises(InventoryError, match="Only an administrator"):
        inventory_run_request(actor=make_user("helen", Role.HELPDESK))
    admin = make_user("root", Role.ADMIN)
    first = inventory_run_request(actor=admin, enqueue=False)
    with pytest.raises(InventoryError, match=f"Import #{first.pk} is already queued"):
        inventory_run_request(actor=admin, enqueue=False)
    assert AuditEvent.objects.filter(action="writeback.inventory.requested", actor=admin).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_page_queues_an_import_that_a_real_worker_runs(tenant, client, make_user):
    import django_rq

    client.force_login(make_user("root", Role.ADMIN))
    response = client.post("/inventory/start/", {"mode": "FULL"})
    assert response.status_code == 302
    run = InventoryRun.objects.get()
    assert run.state == InventoryRun.State.QUEUED and run.job_id
    queue = django_rq.get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    run.refresh_from_db()
    assert run.state == InventoryRun.State.DONE, run.error
    page = client.get("/inventory/").content.decode()
    assert f"<td>{run.pk}</td>" in page and "Done" in page
    assert Mailbox.objects.count() == USERS


@pytest.mark.django_db
def test_a_computer_carrying_exchange_attributes_is_not_imported(tenant):
    """AD's computer class is a subclass of user, so (objectClass=user) matches computer accounts too; a person's
    account is told apart by sAMAccountType SAM_NORMAL_USER_ACCOUNT 0x30000000 = 805306368, a computer's is
    SAM_MACHINE_ACCOUNT 0x30000001 (MS-ADA3 2.223 sAMAccountType; Learn "SAM-Account-Type attribute"). A computer
    that some tool stamped with Exchange attributes must not become a mailbox."""
    directory, _, _ = tenant
    guid = uuid.uuid4()
    dn = f"CN=SALES-PC-042,OU=Sales,{directory.users_dn}"
    with _ad(directory) as connection:
        assert connection.add(dn, ["top", "person", "organizationalPerson", "user", "computer"], {
            "cn": "SALES-PC-042", "sn": "SALES-PC-042", "objectGUID": guid.bytes_le, "sAMAccountName": "SALES-PC-042$",
            "sAMAccountType": 805306369, "dNSHostName": "sales-pc-042.corp.example.com",
            "mailNickname": "sales-pc-042", "proxyAddresses": ["SMTP:sales-pc-042@corp.example.com"],
            "msExchRecipientTypeDetails": 2147483648,
        }), connection.result  # fmt: skip
    try:
        run = _import()
        assert run.state == InventoryRun.State.DONE, run.error
        assert run.ad_read == USERS
        assert not Mailbox.objects.filter(ad_guid=guid).exists()
    finally:
        with _ad(directory) as connection:
            connection.delete(dn)


@pytest.mark.django_db
def test_changes_to_a_mailboxs_presence_and_authority_are_audited_once_per_page_naming_each_mailbox(tenant):
    directory, exchange, _ = tenant
    first = _import()
    created = AuditEvent.objects.filter(action="writeback.inventory.changed", object_id=str(first.pk))
    assert {pk for event in created for pk in event.after["created"]} == set(
        Mailbox.objects.values_list("pk", flat=True)
    )
    assert created.count() <= 2 * (USERS // 500 + 1) + 2  # per page and side, not per mailbox
    mailbox = Mailbox.objects.filter(in_ad=True, in_exo=True, authority=Authority.ON_PREM).order_by("pk").first()
    exo = ExchangeOnlineClient(ExchangeConfig.from_settings())
    exo.set_mailbox(str(mailbox.exo_object_id), IsExchangeCloudManaged=True)
    gone = Mailbox.objects.filter(in_ad=True).exclude(pk=mailbox.pk).order_by("pk").first()
    with _ad(directory) as connection:
        entry = connection.search(gone.dn, "(objectClass=*)", ldap3.BASE, attributes=ldap3.ALL_ATTRIBUTES)
        saved = (connection.entries[0].entry_attributes_as_dict, connection.response[0]["raw_attributes"])
        assert entry and connection.delete(gone.dn), connection.result
    try:
        second = _import()
        changed = {}
        for event in AuditEvent.objects.filter(action="writeback.inventory.changed", object_id=str(second.pk)):
            changed.update(event.after["changed"])
        assert changed == {
            str(mailbox.pk): {"authority": [Authority.ON_PREM, Authority.CLOUD]},
            str(gone.pk): {"in_ad": [True, False]},
        }
    finally:
        exo.set_mailbox(str(mailbox.exo_object_id), IsExchangeCloudManaged=False)
        with _ad(directory) as connection:
            raw = {
                k: v
                for k, v in saved[1].items()
                if k
                not in (
                    "entryUUID",
                    "entryCSN",
                    "structuralObjectClass",
                    "creatorsName",
                    "createTimestamp",
                    "modifiersName",
                    "modifyTimestamp",
                    "entryDN",
                    "subschemaSubentry",
                    "hasSubordinates",
                    "uSNChanged",
                    "uSNCreated",
                    "whenChanged",
                    "whenCreated",
                )
            }
            assert connection.add(gone.dn, attributes=raw), connection.result


@pytest.mark.django_db
def test_an_imported_mailbox_is_found_by_its_surname_and_by_its_new_name_after_a_rename_in_ad(tenant, make_user):
    from soa.selectors import mailbox_search

    directory, _, _ = tenant
    _import()
    user = make_user("finder", Role.WAVE_OPERATOR)
    person = Mailbox.objects.filter(in_ad=True).exclude(display_name="").order_by("pk").first()
    assert " " in person.display_name  # else the first word alone would find it
    surname = person.display_name.split()[-1]
    assert person in mailbox_search(user=user, query=surname.upper())
    with _ad(directory) as connection:
        connection.modify(person.dn, {"displayName": [(ldap3.MODIFY_REPLACE, [f"{person.display_name} Quennell"])]})
    try:
        assert _import(InventoryRun.Mode.INCREMENTAL).state == InventoryRun.State.DONE
        assert list(mailbox_search(user=user, query="quenn")) == [person]
    finally:
        with _ad(directory) as connection:
            connection.modify(person.dn, {"displayName": [(ldap3.MODIFY_REPLACE, [person.display_name])]})
        _import()
    assert not mailbox_search(user=user, query="quenn").exists()


def test_the_raw_read_gives_the_import_what_ldap3s_formatted_read_gives(tenant):
    """The import reads AD through DirectoryClient.paged_search(raw=True) and writeback.inventory_ad.formatted; every
    value it derives from an entry (the mapped attributes, the anchor, the Entra object id, the creation time) must
    be what ldap3's own formatting gave, or the first run after the change would rewrite every row. The seeded users
    carry multi-valued proxyAddresses, integers (msExchRecipientTypeDetails) and binary GUIDs."""
    from django.conf import settings

    from soa.attributes import ATTRIBUTES
    from soa.values import ad_values
    from writeback.directory import AD_USER_FILTER, DirectoryClient, DirectoryConfig
    from writeback.inventory import CREATED_ATTRIBUTE
    from writeback.inventory_ad import formatted
    from writeback.inventory_pairing import CONSISTENCY_GUID, DIRECTORY_ID_ATTRIBUTE, directory_object_id

    directory, _, _ = tenant
    names = ["objectGUID", CONSISTENCY_GUID, DIRECTORY_ID_ATTRIBUTE, CREATED_ATTRIBUTE, *(a.ad for a in ATTRIBUTES)]
    with DirectoryClient(DirectoryConfig.from_settings()) as client:
        first = next(client.paged_search(settings.LDAP_BASE_DN, AD_USER_FILTER, ["objectGUID"]))
        marked = f"User_{uuid.uuid4()}"  # as Entra Connect's hybrid writeback would leave it
        connection = _ad(directory)
        assert connection.modify(first["dn"], {DIRECTORY_ID_ATTRIBUTE: [(ldap3.MODIFY_REPLACE, [marked])]})
        try:
            slow = list(client.paged_search(settings.LDAP_BASE_DN, AD_USER_FILTER, names, page_size=7))
            fast = [formatted(e) for e in client.paged_search(settings.LDAP_BASE_DN, AD_USER_FILTER, names,
                                                              page_size=7, raw=True)]  # fmt: skip
        finally:  # the module's other tests see the tenant as seeded
            connection.modify(first["dn"], {DIRECTORY_ID_ATTRIBUTE: [(ldap3.MODIFY_REPLACE, [])]})
            connection.unbind()
    assert len(fast) == len(slow) >= USERS
    assert [e["dn"] for e in fast] == [e["dn"] for e in slow]
    assert any(directory_object_id(e["attributes"]) for e in fast)
    for quick, ldap3_entry in zip(fast, slow, strict=True):
        q, s = quick["attributes"], ldap3_entry["attributes"]
        assert ad_values(q) == ad_values(s)
        assert source_anchor(q) == source_anchor(s)
        assert directory_object_id(q) == directory_object_id(s)
        assert created_at(q) == created_at(s) is not None
        assert q["objectGUID"] == s["objectGUID"]
