"""Pairing AD users with Exchange mailboxes against the sandbox directory and the emulator, the ways Microsoft's
sync pairs them (exchange-facts §8): msDS-ExternalDirectoryObjectID, Graph's sourceAnchor, then a weak name match."""

import uuid

import ldap3
import pytest

from portal.models import AuditEvent
from soa.choices import Pairing
from soa.models import Mailbox
from tests.exchange_fixtures import exchange_config, private_tenant
from writeback.exchange import GraphClient
from writeback.inventory import inventory_run_request
from writeback.inventory_pairing import source_anchor
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

USERS = 30
DIRECTORY_ID = "msDS-ExternalDirectoryObjectID"


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=USERS, seed=11) as tenant:
        yield tenant


@pytest.fixture
def hybrid_writeback(tenant):
    """Entra Connect's Exchange hybrid writeback on for one test; afterwards off, and AD's copies removed again."""
    directory, exchange, _ = tenant
    exchange.set_settings(hybrid_writeback=True)
    exchange.sync()
    yield
    exchange.set_settings(hybrid_writeback=False)
    _clear_directory_ids(directory)


def _ad(directory):
    return ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)


def _clear_directory_ids(directory) -> None:
    with _ad(directory) as connection:
        connection.search(directory.base_dn, f"({DIRECTORY_ID}=*)", attributes=["cn"])
        for entry in connection.entries:
            connection.modify(entry.entry_dn, {DIRECTORY_ID: [(ldap3.MODIFY_DELETE, [])]})


def _import(mode=InventoryRun.Mode.FULL) -> InventoryRun:
    run = inventory_run_request(actor=None, mode=mode, enqueue=False)
    run = execute(claim(run.pk))
    assert run.state == InventoryRun.State.DONE, run.error
    return run


def _paired():
    return Mailbox.objects.filter(in_ad=True, in_exo=True)


@pytest.mark.django_db
def test_hybrid_writeback_pairs_every_user_by_its_directory_object_id_without_asking_graph(tenant, hybrid_writeback):
    """Entra Connect's Exchange hybrid writeback writes User_<Entra object id> into msDS-ExternalDirectoryObjectID,
    and Exchange shows that object id as ExternalDirectoryObjectId (exchange-facts §8, MS S60-S62): the pair needs
    nothing else, so Graph is not read."""
    directory, exchange, report = tenant
    run = _import()
    paired = _paired()
    assert paired.count() == USERS  # the tick also gave the seed's three mailbox-less users their mailbox
    assert set(paired.values_list("pairing", flat=True)) == {Pairing.DIRECTORY_ID}
    assert run.pairings == {Pairing.DIRECTORY_ID: paired.count()}
    assert run.graph_read == 0 and run.phase == ""
    sample = paired.order_by("pk").first()
    assert str(sample.exo_object_id) == exchange.get_mailbox(sample.upn)["ExternalDirectoryObjectId"]


@pytest.mark.django_db
def test_without_hybrid_writeback_graph_pairs_by_the_source_anchor(tenant):
    """Graph's user carries onPremisesImmutableId, base64 of the sourceAnchor (mS-DS-ConsistencyGuid, else objectGUID),
    and id, which Exchange shows as ExternalDirectoryObjectId (exchange-facts §3, §8). Get-Mailbox's own ImmutableId
    is msExchGenericImmutableId, empty here, and pairs nothing."""
    directory, exchange, report = tenant
    run = _import()
    paired = _paired()
    assert paired.count() == Mailbox.objects.filter(in_ad=True).count() - Mailbox.objects.filter(in_exo=False).count()
    assert set(paired.values_list("pairing", flat=True)) == {Pairing.GRAPH}
    assert run.graph_read >= USERS and run.graph_paired == paired.count()
    sample = paired.order_by("pk").first()
    with _ad(directory) as connection:
        connection.search(sample.dn, "(objectClass=*)", ldap3.BASE, attributes=["objectGUID", "mS-DS-ConsistencyGuid"])
        raw = connection.response[0]["raw_attributes"]
    assert sample.source_anchor == source_anchor({name: (values or [None])[0] for name, values in raw.items()})
    assert all(not m["ImmutableId"] for m in exchange.mailboxes() if m.get("IsDirSynced"))


@pytest.mark.django_db
def test_without_either_identifier_a_name_match_pairs_weakly_and_the_directory_id_later_confirms_it(tenant, settings):
    """With neither hybrid writeback nor Graph, only the UPN is left: a weak pair (pre-flight warns). Once Connect
    writes msDS-ExternalDirectoryObjectID back, an incremental run confirms the same pairs by identifier."""
    directory, exchange, report = tenant
    settings.INVENTORY_GRAPH_PAIRING = False
    _import()
    assert set(_paired().values_list("pairing", flat=True)) == {Pairing.UPN}
    before = dict(_paired().values_list("pk", "exo_object_id"))
    exchange.set_settings(hybrid_writeback=True)
    exchange.sync()
    try:
        run = _import(InventoryRun.Mode.INCREMENTAL)
        assert run.ad_read >= len(before)  # writing the attribute is a change AD's change tracking reports
        after = dict(_paired().values_list("pk", "exo_object_id"))
        assert {pk: after[pk] for pk in before} == before
        assert set(_paired().values_list("pairing", flat=True)) == {Pairing.DIRECTORY_ID}
        assert Mailbox.objects.count() == USERS
    finally:
        exchange.set_settings(hybrid_writeback=False)
        _clear_directory_ids(directory)


@pytest.mark.django_db
def test_a_wrong_name_match_is_split_off_when_the_directory_names_another_mailbox(tenant, settings):
    """An identifier outranks a name match (exchange-facts §8): when AD's msDS-ExternalDirectoryObjectID names another
    Exchange object than the one the UPN matched, the wrong mailbox goes back to being one-sided and the named one
    (imported alone so far) joins the AD user, with an audit event naming both."""
    directory, exchange, report = tenant
    settings.INVENTORY_GRAPH_PAIRING = False
    dn = f"CN=Lena Lonely,OU=Sales,{directory.users_dn}"
    with _ad(directory) as connection:  # no sync tick follows, so Exchange has no mailbox for her
        assert connection.add(dn, ["top", "person", "organizationalPerson", "user"], {
            "cn": "Lena Lonely", "sn": "Lonely", "objectGUID": uuid.uuid4().bytes_le, "sAMAccountType": 805306368,
            "userPrincipalName": "lena.lonely@corp.example.com", "mailNickname": "lena.lonely",
            "mail": "lena.lonely@corp.example.com", "proxyAddresses": ["SMTP:lena.lonely@corp.example.com"],
            "msExchRecipientTypeDetails": 2147483648, "displayName": "Lena Lonely",
        }), connection.result  # fmt: skip
    _import()
    lonely = Mailbox.objects.get(upn="lena.lonely@corp.example.com")
    impostor = exchange.create_mailbox(UserPrincipalName=lonely.upn, IsDirSynced=True, DisplayName="Impostor")
    rightful = exchange.create_mailbox(UserPrincipalName=f"renamed-{uuid.uuid4().hex[:6]}@corp.example.com",
                                       IsDirSynced=True, DisplayName="Rightful")  # fmt: skip
    try:
        _import()
        lonely.refresh_from_db()
        assert (lonely.pairing, str(lonely.exo_object_id)) == (Pairing.UPN, impostor["ExternalDirectoryObjectId"])
        rightful_row = Mailbox.objects.get(exo_object_id=rightful["ExternalDirectoryObjectId"])
        assert not rightful_row.in_ad
        count = Mailbox.objects.count()
        with _ad(directory) as connection:
            value = f"User_{rightful['ExternalDirectoryObjectId']}"
            assert connection.modify(lonely.dn, {DIRECTORY_ID: [(ldap3.MODIFY_REPLACE, [value])]}), connection.result

        _import(InventoryRun.Mode.INCREMENTAL)
        lonely.refresh_from_db()
        assert (lonely.pairing, str(lonely.exo_object_id)) == (
            Pairing.DIRECTORY_ID,
            rightful["ExternalDirectoryObjectId"],
        )
        assert lonely.in_exo and lonely.display_name != "Rightful"  # identity stays AD's
        assert not Mailbox.objects.filter(pk=rightful_row.pk).exists()
        split = Mailbox.objects.get(exo_object_id=impostor["ExternalDirectoryObjectId"])
        assert split.in_exo and not split.in_ad and split.pairing == Pairing.NONE
        assert split.addresses.exists() and lonely.addresses.filter(is_primary=True).exists()
        assert Mailbox.objects.count() == count
        event = AuditEvent.objects.filter(action="writeback.inventory.paired").latest("pk")
        (pair,) = event.after["pairs"]
        assert pair["was_paired_with"] == impostor["ExternalDirectoryObjectId"] and pair["was_paired_by"] == Pairing.UPN
        assert pair["merged_row"] == rightful_row.pk
    finally:
        with _ad(directory) as connection:
            connection.delete(dn)
        exchange.delete_mailbox(impostor["ExternalDirectoryObjectId"])
        exchange.delete_mailbox(rightful["ExternalDirectoryObjectId"])


def test_graph_client_pages_through_users_with_select(tenant):
    """GET /v1.0/users pages through @odata.nextLink, $top up to 999, and $select returns only the properties asked
    for (Microsoft Graph: List users; Use the $select and $top query parameters; Paging Microsoft Graph data)."""
    _, exchange, _ = tenant
    graph = GraphClient(exchange_config(exchange, graph_base_url=exchange.graph_url, graph_scope=exchange.graph_scope))
    pages = list(graph.iter_user_pages(page_size=7))
    assert len(pages) > 1 and all(len(page) <= 7 for page in pages)
    users = [user for page in pages for user in page]
    assert len({user["id"] for user in users}) == len(users) >= USERS
    assert {key for user in users for key in user if not key.startswith("@")} <= {
        "id", "userPrincipalName", "onPremisesImmutableId", "onPremisesDistinguishedName"
    }  # fmt: skip
