"""A full import spread over workers (writeback.inventory_shards) against the sandbox's slapd, the HTTPS emulator
and the configured database: the directory split by OU subtree holds every user once, and a spread import ends
where a serial one does, whoever does its parts, a dead worker's part included."""

import datetime as dt
import threading
import time

import ldap3
import pytest
from django.db import IntegrityError, close_old_connections, connection
from django.utils import timezone

from tests.exchange_fixtures import private_tenant
from tests.writeback.test_inventory_one_write import _edit, _import, _state
from writeback import inventory_shards
from writeback.directory import AD_USER_FILTER, DirectoryClient, DirectoryConfig
from writeback.inventory import inventory_run_request
from writeback.inventory_shards import SharedSpool, _pack, inventory_shard_work, plan_shards
from writeback.jobs.inventory import claim, execute, inventory_sweep
from writeback.models import InventoryObject, InventoryRun, InventoryShard
from writeback.read_ahead import Held, Spool

USERS = 150
PAGE = 40
_TARGETS: list[str] = []  # the two mailboxes this module's tenant edits between imports (_edit)


def _move(connection_, dn: str, superior: str) -> str:
    rdn = dn.split(",", 1)[0]
    assert connection_.modify_dn(dn, rdn, new_superior=superior), connection_.result
    return f"{rdn},{superior}"


@pytest.fixture(scope="module")
def tenant():
    """Users at every depth: one right under the domain, one right under OU=Corp, one in an OU nested in a
    department's, beside an empty OU, one in AD's default CN=Users container (class container, MS-ADSC); the rest
    in their departments' OUs."""
    with private_tenant(users=USERS, seed=29) as (directory, exchange, report):
        exchange.set_settings(hybrid_writeback=True)
        exchange.sync()
        corp = f"OU=Corp,{directory.base_dn}"
        with ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True) as ldap:
            ldap.search(corp, "(objectClass=organizationalUnit)", search_scope=ldap3.LEVEL)
            department = sorted(e.entry_dn for e in ldap.entries)[0]
            ldap.search(corp, "(userPrincipalName=*)", attributes=["cn"])
            people = sorted(e.entry_dn for e in ldap.entries)[:4]
            for name in ("Nested", "Empty"):
                parent = department if name == "Nested" else corp
                assert ldap.add(f"OU={name},{parent}", ["top", "organizationalUnit"], {"ou": name}), ldap.result
            users = f"CN=Users,{directory.base_dn}"
            assert ldap.add(users, ["top", "container"], {"cn": "Users"}), ldap.result
            _move(ldap, people[0], directory.base_dn)
            _move(ldap, people[1], corp)
            _move(ldap, people[2], f"OU=Nested,{department}")
            _move(ldap, people[3], users)
        yield directory, exchange, report


def _users(client: DirectoryClient, dn: str, scope) -> list[str]:
    return [entry["dn"] for entry in client.paged_search(dn, AD_USER_FILTER, ["cn"], scope=scope)]


@pytest.mark.parametrize("wanted", [1, 2, 6, 40])
def test_the_parts_hold_every_user_once_whatever_their_number(tenant, wanted):
    """AD puts a user only below an instance of a class its possSuperiors name (MS-ADTS 3.1.1.2.4.2, Structure
    Rules): the split descends through those classes (the sandbox's schema has AD's container, with Microsoft's
    OID), so one-level parts of split entries and subtree parts of the rest hold every user exactly once."""
    directory, _, _ = tenant
    client = DirectoryClient(DirectoryConfig.from_settings())
    try:
        parts = plan_shards(client, directory.base_dn, wanted)
        everyone = _users(client, directory.base_dn, ldap3.SUBTREE)
        found = []
        for scope, dn in parts:
            found += _users(client, dn, ldap3.SUBTREE if scope == InventoryShard.Scope.SUBTREE else ldap3.LEVEL)
    finally:
        client.close()
    assert len(everyone) == USERS
    assert sorted(found) == sorted(everyone)  # each once: no user in two parts, none in no part
    assert len(parts) >= min(wanted, 2) and len(set(parts)) == len(parts)
    if wanted == 1:
        assert parts == [(InventoryShard.Scope.SUBTREE, directory.base_dn)]
    if wanted == 40:  # split down to the nested OU: the domain's and OU=Corp's own users are parts of their own
        lowered = {(scope, dn.lower()) for scope, dn in parts}  # slapd spells the DNs it returns its own way
        base, level, subtree = directory.base_dn.lower(), InventoryShard.Scope.LEVEL, InventoryShard.Scope.SUBTREE
        assert {(level, base), (level, f"ou=corp,{base}"), (subtree, f"cn=users,{base}")} <= lowered
        assert any(dn.startswith("ou=nested,") for _, dn in lowered)


def _runs(directory, exchange, settings, workers: int) -> list[dict]:
    """A first full import, an unchanged one, an incremental and a full one after edits on both sides."""
    from soa.models import Mailbox

    settings.INVENTORY_WORKERS = workers
    Mailbox.objects.all().delete()
    states = [_state(_import(InventoryRun.Mode.FULL)), _state(_import(InventoryRun.Mode.FULL))]
    _edit(directory, exchange, undo=False, targets=_TARGETS)
    try:
        states.append(_state(_import(InventoryRun.Mode.INCREMENTAL)))
        states.append(_state(_import(InventoryRun.Mode.FULL)))
    finally:
        _edit(directory, exchange, undo=True, targets=_TARGETS)
    return states


def _same(states: list[dict], expected: list[dict]) -> None:
    for step, (state, wanted) in enumerate(zip(states, expected, strict=True)):
        for part in wanted:
            if part == "figures" and step == 2:  # the incremental read's counts depend on change marks' timing
                continue
            assert state[part] == wanted[part], (step, part)


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr("writeback.inventory.PAGE_SIZE", PAGE)
    monkeypatch.setattr("writeback.inventory_shards.PAGE_SIZE", PAGE)


@pytest.mark.django_db
@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
def test_a_spread_import_ends_where_a_serial_one_does(tenant, settings, small_pages, process):
    """With no other worker running, the coordinator does every part itself."""
    directory, exchange, _ = tenant
    settings.INVENTORY_READ_PROCESS = process
    serial = _runs(directory, exchange, settings, workers=1)
    spread = _runs(directory, exchange, settings, workers=3)
    _same(spread, serial)
    run = InventoryRun.objects.filter(mode=InventoryRun.Mode.FULL).order_by("-pk").first()
    shards = list(InventoryShard.objects.filter(run=run))
    # The tree has fewer entries to split than the 12 parts asked for: every one that may hold users is split.
    assert len(shards) == 10, [str(s) for s in shards]
    assert {s.state for s in shards} == {InventoryShard.State.DONE} and sum(s.ad_read for s in shards) == run.ad_read
    assert not InventoryObject.objects.exists()  # the shared objects go when the run ends


@pytest.mark.django_db
def test_a_part_whose_worker_stopped_beating_is_done_by_the_coordinator(tenant, settings, small_pages, monkeypatch):
    directory, exchange, _ = tenant
    serial = _runs(directory, exchange, settings, workers=1)[0]
    settings.INVENTORY_SHARD_STALE_SECONDS = 10
    original, dead = inventory_shards._claim, []

    def claim_after_a_dead_worker(run, worker):
        if not dead:  # another worker claims the first part, then dies: its heartbeat is an hour old
            shard = original(run, "gone-host:4242")
            InventoryShard.objects.filter(pk=shard.pk).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
            dead.append(shard.pk)
        return original(run, worker)

    monkeypatch.setattr(inventory_shards, "_claim", claim_after_a_dead_worker)
    settings.INVENTORY_WORKERS = 2
    from soa.models import Mailbox

    Mailbox.objects.all().delete()
    spread = _state(_import(InventoryRun.Mode.FULL))
    _same([spread], [serial])
    shard = InventoryShard.objects.get(pk=dead[0])
    assert shard.state == InventoryShard.State.DONE and shard.claims == 2 and shard.worker != "gone-host:4242"


@pytest.mark.django_db
def test_a_part_failed_on_another_worker_fails_the_run_and_names_it(tenant, settings, small_pages, monkeypatch):
    original, failed = inventory_shards._claim, []

    def claim_after_a_failure(run, worker):
        if not failed:
            shard = original(run, "other-host:7")
            InventoryShard.objects.filter(pk=shard.pk).update(state=InventoryShard.State.FAILED, error="LDAP gone")
            failed.append(shard)
        return original(run, worker)

    monkeypatch.setattr(inventory_shards, "_claim", claim_after_a_failure)
    settings.INVENTORY_WORKERS = 2
    run = execute(claim(inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False).pk))
    assert run.state == InventoryRun.State.FAILED
    assert f"Reading {failed[0]} failed on other-host:7: LDAP gone" in run.error
    assert not InventoryObject.objects.filter(run=run).exists()


@pytest.mark.django_db(transaction=True)
def test_parts_done_by_several_workers_at_once_end_where_a_serial_import_does(tenant, settings, small_pages):
    """Two helpers (threads with connections of their own, as helper jobs in other processes would have) take
    parts while the coordinator does. PostgreSQL only: SQLite's in-memory test database locks a table per writer.
    The coordinator reads Exchange in a thread here: forking its reader while the helper threads use SQLite (their
    Held stores) can leave the child waiting for ever on a lock a helper held at the fork. In production helpers run
    in other processes, and the coordinator forks before it starts a thread."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (CI runs it)")
    settings.INVENTORY_READ_PROCESS = False
    directory, exchange, _ = tenant
    serial = _runs(directory, exchange, settings, workers=1)[0]
    from soa.models import Mailbox

    Mailbox.objects.all().delete()
    settings.INVENTORY_WORKERS = 3
    stop, done, errors = threading.Event(), [], []

    def helper():
        try:
            while not stop.is_set():
                run = InventoryRun.objects.filter(state=InventoryRun.State.RUNNING).first()
                if run is not None:
                    done.append(inventory_shard_work(run.pk))
                time.sleep(0.01)
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            close_old_connections()
            connection.close()

    helpers = [threading.Thread(target=helper) for _ in range(2)]
    for thread in helpers:
        thread.start()
    try:
        spread = _state(_import(InventoryRun.Mode.FULL))
    finally:
        stop.set()
        for thread in helpers:
            thread.join(30)
    assert not errors, errors
    _same([spread], [serial])
    assert sum(done) > 0  # the helpers did parts


@pytest.mark.django_db
def test_the_shared_spool_hands_each_object_over_once_and_the_rest_in_order(settings):
    run = InventoryRun.objects.create(state=InventoryRun.State.RUNNING)
    objects = [{"Id": n, "ExternalDirectoryObjectId": f"{n:032x}"} for n in range(1, 8)]
    pages = [objects[:3], objects[3:]]

    def key(item):
        return bytes.fromhex(item["ExternalDirectoryObjectId"]) if item["Id"] % 2 else None

    with Spool(lambda: iter(pages), key=key, pack=_pack) as local:
        spool = SharedSpool(run.pk, local)
        while not spool.finished:
            time.sleep(0.01)
    reader = SharedSpool(run.pk)  # another worker's view
    assert reader.finished and spool.published == 7
    odd = [key(item) for item in objects if item["Id"] % 2]
    assert reader.has([*odd, b"\0" * 16]) == set(odd)
    assert reader.take([odd[1], odd[3]]) == {odd[1]: [objects[2]], odd[3]: [objects[6]]}
    assert reader.take([odd[1]]) == {} and reader.taken == 2
    assert [item["Id"] for page in spool.remaining(2) for item in page] == [1, 2, 4, 5, 6]
    run.state = InventoryRun.State.FAILED
    run.save()
    inventory_sweep()  # an ended run's shared objects go (its coordinator died before it could remove them)
    assert not InventoryObject.objects.filter(run=run).exists()


class _Counted:
    taken = 0


@pytest.mark.django_db
def test_a_page_that_lost_a_race_is_merged_again_with_nothing_of_the_failed_attempt_left(monkeypatch):
    """Pure unit test of _merge with a stand-in for import_ad_page: what the failed attempt put aside and counted
    as taken is gone before the page is merged again; a page that keeps failing raises."""
    run = InventoryRun.objects.create(state=InventoryRun.State.RUNNING)
    seen, failures = [], [1]

    def import_ad_page(run, page, spool, held):
        seen.append((held.count, spool.taken))
        held.put([(b"key", page[0], True)])
        spool.taken += 5
        if len(seen) in failures:
            raise IntegrityError('duplicate key value violates unique constraint "soa_mailbox_exo_object_id_key"')
        return None

    monkeypatch.setattr(inventory_shards, "import_ad_page", import_ad_page)
    spool = _Counted()
    with Held() as held:
        inventory_shards._merge(run, ["user"], spool, held)
        assert seen == [(0, 0), (0, 0)] and held.count == 1 and spool.taken == 5
        failures[:] = range(1, 100)
        seen.clear()
        with pytest.raises(IntegrityError):
            inventory_shards._merge(run, ["user"], spool, held)
        assert len(seen) == inventory_shards._MERGE_ATTEMPTS and held.count == 1 and spool.taken == 5


def test_spreading_imports_over_workers_on_sqlite_is_refused_at_start(settings):
    from writeback.inventory_shards import check_spread_database, spread_database_problem

    assert spread_database_problem(1, "sqlite") == "" and spread_database_problem(4, "postgresql") == ""
    assert "INVENTORY_WORKERS is 4 on SQLite" in spread_database_problem(4, "sqlite")
    settings.INVENTORY_WORKERS = 4
    errors = check_spread_database()
    if connection.vendor == "sqlite":
        assert [error.id for error in errors] == ["writeback.E003"]
    else:
        assert errors == []
