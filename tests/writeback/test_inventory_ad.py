"""The AD side of incremental imports against a real slapd and the emulator: a change mark is trusted only on the
server that issued it, and OU renames and moves reach the users below them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ldap3
import pytest

from portal.dn import normalize_dn
from sandbox.directory import SandboxDirectory
from sandbox.exchange_online import ExchangeOnlineEmulator
from sandbox.seed import seed_tenant
from soa.models import Mailbox
from tests.exchange_fixtures import portal_points_at
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

USERS = 40
SEED = 11


class Tenant:
    """A directory that can be restarted on the same data as another domain controller, and its emulator."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.directory = self._start("DC1")
        self.exchange = ExchangeOnlineEmulator.start(directory=self.directory)
        seed_tenant(self.directory, self.exchange, seed=SEED)

    def _start(self, server_name: str, port: int | None = None) -> SandboxDirectory:
        return SandboxDirectory.start(
            users=USERS, seed=SEED, workdir=self.workdir, keep=True, server_name=server_name, port=port
        )

    def restart_as(self, server_name: str) -> None:
        """Stop slapd and start it again on the same port and database, its root DSE naming another DC."""
        port = self.directory.port
        self.directory.stop()
        self.directory = self._start(server_name, port=port)
        assert self.directory.reopened

    def ldap(self) -> ldap3.Connection:
        d = self.directory
        return ldap3.Connection(d.url, d.bind_dn, d.password, auto_bind=True)

    def stop(self) -> None:
        self.exchange.stop()
        self.directory.stop()


@contextmanager
def _settings_for(tenant: Tenant) -> Iterator[None]:
    from django.conf import settings

    # These tests are about the AD read; pairing through Graph is tested with the inventory.
    saved, settings.INVENTORY_GRAPH_PAIRING = settings.INVENTORY_GRAPH_PAIRING, False
    try:
        with portal_points_at(tenant.directory, tenant.exchange):
            yield
    finally:
        settings.INVENTORY_GRAPH_PAIRING = saved


@pytest.fixture(scope="module")
def tenant(tmp_path_factory) -> Iterator[Tenant]:
    started = Tenant(tmp_path_factory.mktemp("restartable") / "slapd")
    try:
        with _settings_for(started):
            yield started
    finally:
        started.stop()


def _import(mode=InventoryRun.Mode.FULL) -> InventoryRun:
    run = inventory_run_request(actor=None, mode=mode, enqueue=False)
    done = execute(claim(run.pk))
    assert done.state == InventoryRun.State.DONE, done.error
    return InventoryRun.objects.get(pk=run.pk)


def _users_below(tenant: Tenant, ou_dn: str) -> set[str]:
    with tenant.ldap() as connection:
        connection.search(ou_dn, "(sAMAccountType=805306368)", attributes=["1.1"])
        return {normalize_dn(entry["dn"]) for entry in connection.response if entry["type"] == "searchResEntry"}


@pytest.mark.django_db
def test_a_change_mark_is_trusted_only_on_the_domain_controller_that_issued_it(tenant):
    """USNs are per domain controller: highestCommittedUSN and uSNChanged are numbers of the DC's own update
    sequence, and a DC restored from backup gets a new invocationId so that its reused USNs are not mistaken for
    old ones (MS-ADTS 3.1.1.3.2.3 rootDSE dsServiceName and highestCommittedUSN; MS-DRSR 5.1 "USN", "invocationId").
    A mark read from DC1 means nothing on DC2, so an incremental run answered by another DC reads the whole AD
    side, and records the new DC with its mark."""
    first = _import()
    quiet = _import(InventoryRun.Mode.INCREMENTAL)
    assert quiet.ad_read == 0

    tenant.restart_as("DC2")  # the same domain (same data, same change stamps), answered by another DC
    moved = _import(InventoryRun.Mode.INCREMENTAL)
    assert moved.ad_read == USERS
    assert "CN=DC1," in first.ad_server and first.ad_high_water and quiet.ad_full_reason == ""
    assert "CN=DC2," in moved.ad_server and "CN=DC2," in moved.ad_full_reason and "CN=DC1," in moved.ad_full_reason
    assert _import(InventoryRun.Mode.INCREMENTAL).ad_read == 0  # DC2's mark is trusted on DC2


@pytest.mark.django_db
def test_an_incremental_run_follows_an_ou_rename_and_move_to_the_users_below(tenant):
    """Renaming or moving an OU changes that OU's uSNChanged but not its children's: AD stores a child's parent by
    reference, and the child's own replicated attributes do not change (MS-ADTS 3.1.1.1.9 "uSNChanged"; the
    sandbox's slapd behaves alike, pinned in tests/sandbox/test_directory.py). Users' DNs and OUs, which decide
    OU-scoped access, must still follow in the next incremental run."""
    _import()
    corp = tenant.directory.users_dn
    sales, finance = f"OU=Sales,{corp}", f"OU=Finance,{corp}"
    renamed, moved_finance = f"OU=Sales EMEA,{corp}", f"OU=Finance,OU=Sales EMEA,{corp}"
    sales_users, finance_users = _users_below(tenant, sales), _users_below(tenant, finance)
    assert sales_users and finance_users
    with tenant.ldap() as connection:
        assert connection.modify_dn(sales, "OU=Sales EMEA"), connection.result
        assert connection.modify_dn(finance, "OU=Finance", new_superior=renamed), connection.result
    try:
        run = _import(InventoryRun.Mode.INCREMENTAL)
        stored = set(Mailbox.objects.filter(in_ad=True).values_list("dn_norm", flat=True))
        for users, parent in ((sales_users, renamed), (finance_users, moved_finance)):
            expected = {f"{dn.split(',', 1)[0]},{normalize_dn(parent)}" for dn in users}
            assert expected <= stored
            assert Mailbox.objects.filter(ou_norm=normalize_dn(parent)).count() == len(users)
        assert not Mailbox.objects.filter(ou_norm__in=[normalize_dn(sales), normalize_dn(finance)]).exists()
        assert run.ad_read == len(sales_users) + len(finance_users)  # each user once, though two OUs hold Finance
        assert run.ad_ous_changed == 2 and run.ad_full_reason == ""
    finally:
        with tenant.ldap() as connection:
            connection.modify_dn(moved_finance, "OU=Finance", new_superior=corp)
            connection.modify_dn(renamed, "OU=Sales")
