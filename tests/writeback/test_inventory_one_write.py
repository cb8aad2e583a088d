"""The directory pass takes from the Exchange spool the objects its users name, so a pair is written once, whole
(writeback.inventory.import_ad_page). How much it takes depends on how far the reader has got, which no run
controls; whatever it took, the run must end where the Exchange pass alone would have taken it. These tests fix
the two extremes (the reader done before the first directory page, and nothing taken) and compare them with each
other and with the run as it happens, on a tenant with Entra Connect's hybrid writeback on, so every synced user
names its object (exchange-facts §8), and the seed's untidiness: cloud edits, AD edits, missing and cloud-only
mailboxes."""

import ldap3
import pytest

from portal.models import AuditEvent
from soa.choices import Authority, Pairing
from soa.models import Mailbox, MailboxAddress, MailboxNameWord
from tests.exchange_fixtures import private_tenant
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun
from writeback.read_ahead import Spool

USERS = 120  # more than one directory page would need at PAGE_SIZE 50 (set below), so pages take in turns
PAGE = 50
_RUN_FIGURES = (
    "ad_read", "exo_read", "created", "changed", "unchanged", "skipped_not_synced", "exo_only", "ad_only", "drifted",
    "pairings", "exo_high_water",
)  # fmt: skip
# What a row's value does not depend on the order of the passes (keys, times of writing, the optimistic lock).
_NOT_COMPARED = {
    "id",
    "created_at",
    "updated_at",
    "ad_read_at",
    "exo_read_at",
    "ad_seen_run",
    "exo_seen_run",
    "version",
}


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=USERS, seed=23) as (directory, exchange, report):
        exchange.set_settings(hybrid_writeback=True)
        exchange.sync()
        yield directory, exchange, report


_original_take = Spool.take


def _take_after_the_whole_read(spool, keys):
    spool.thread.join()  # the relay (process) or the reader (thread) ends when everything is spooled
    return _original_take(spool, keys)


TAKES = {
    "everything": _take_after_the_whole_read,
    "nothing": lambda spool, keys: {},
    "as it happens": _original_take,
}


def _import(mode: str) -> InventoryRun:
    run = inventory_run_request(actor=None, mode=mode, enqueue=False)
    run = execute(claim(run.pk))
    assert run.state == InventoryRun.State.DONE, run.error
    return run


def _state(run: InventoryRun) -> dict:
    """Everything the run left, keyed by what identifies a mailbox across runs (its AD GUID or Exchange id)."""
    rows = {}
    names = {}
    for mailbox in Mailbox.objects.all():
        key = str(mailbox.ad_guid or mailbox.exo_object_id)
        names[mailbox.pk] = key
        values = {f.attname: getattr(mailbox, f.attname) for f in Mailbox._meta.concrete_fields}
        if run.mode == InventoryRun.Mode.FULL:  # a full run saw every row present on a side
            assert not mailbox.in_ad or mailbox.ad_seen_run == run.pk
            assert not mailbox.in_exo or mailbox.exo_seen_run == run.pk
        rows[key] = {name: value for name, value in values.items() if name not in _NOT_COMPARED}
    addresses = {(names[a.mailbox_id], a.prefix, a.address, a.is_primary) for a in MailboxAddress.objects.all()}
    words = {(names[w.mailbox_id], w.suffix) for w in MailboxNameWord.objects.all()}
    created, changed = set(), {}
    for event in AuditEvent.objects.filter(action="writeback.inventory.changed", object_id=str(run.pk)):
        created |= {names[pk] for pk in event.after["created"]}
        for pk, diff in event.after["changed"].items():
            changed.setdefault(names[int(pk)], {}).update(diff)
    figures = {name: getattr(run, name) for name in _RUN_FIGURES}
    return {"rows": rows, "addresses": addresses, "words": words, "created": created, "changed": changed,
            "figures": figures}  # fmt: skip


_TARGETS: list[str] = []


def _edit(directory, exchange, *, undo: bool) -> None:
    """Changes on both sides between two imports: an AD attribute, a flip, a cloud alias; ``undo`` restores them."""
    if not _TARGETS:  # chosen once, among the mailboxes still on-premises: the same two every time
        synced = sorted(
            (m for m in exchange.mailboxes() if m.get("IsDirSynced") and not m.get("IsExchangeCloudManaged")),
            key=lambda m: m["ExternalDirectoryObjectId"],
        )
        _TARGETS.extend(m["ExternalDirectoryObjectId"] for m in synced[:2])
    flipped, aliased = _TARGETS[0], exchange.get_mailbox(_TARGETS[1])
    exchange.update_mailbox(flipped, IsExchangeCloudManaged=not undo)
    addresses = [a for a in aliased["EmailAddresses"] if not a.startswith("smtp:extra.")]
    if not undo:
        addresses.append(f"smtp:extra.{aliased['Alias']}@{exchange.mail_domain}")
    exchange.update_mailbox(_TARGETS[1], EmailAddresses=addresses)
    with ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True) as connection:
        connection.search(directory.base_dn, "(userPrincipalName=*)", attributes=["cn"], size_limit=3)
        dn = sorted(e.entry_dn for e in connection.entries)[0]
        value = [] if undo else ["edited between imports"]
        assert connection.modify(dn, {"extensionAttribute8": [(ldap3.MODIFY_REPLACE, value)]}), connection.result


def _runs(directory, exchange, monkeypatch, take) -> list[dict]:
    """A first import, an unchanged full re-run, and an incremental and a full run after edits on both sides."""
    Mailbox.objects.all().delete()
    monkeypatch.setattr(Spool, "take", take)
    states = [_state(_import(InventoryRun.Mode.FULL)), _state(_import(InventoryRun.Mode.FULL))]
    _edit(directory, exchange, undo=False)
    try:
        states.append(_state(_import(InventoryRun.Mode.INCREMENTAL)))
        states.append(_state(_import(InventoryRun.Mode.FULL)))
    finally:
        _edit(directory, exchange, undo=True)
    return states


@pytest.mark.django_db
@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
def test_whatever_the_directory_pass_takes_the_runs_end_in_the_same_state(tenant, monkeypatch, settings, process):
    directory, exchange, report = tenant
    settings.INVENTORY_READ_PROCESS = process
    monkeypatch.setattr("writeback.inventory.PAGE_SIZE", PAGE)
    taken = []
    counting = lambda spool, keys: taken.append(len(found := TAKES["everything"](spool, keys))) or found  # noqa: E731
    results = {
        name: _runs(directory, exchange, monkeypatch, take) for name, take in TAKES.items() if name != "everything"
    }
    results["everything"] = _runs(directory, exchange, monkeypatch, counting)

    # The extreme that takes everything did take every synced user's object on the first run. (The fixture's sync
    # gave the seed's missing mailboxes back; the seed's cloud edits stay drift.)
    synced = [m for m in exchange.mailboxes() if m.get("IsDirSynced")]
    assert sum(taken[: USERS // PAGE + 1]) == len(synced) == USERS
    first = results["everything"][0]
    assert first["figures"]["pairings"] == {Pairing.DIRECTORY_ID: USERS}
    assert first["figures"]["created"] == USERS and first["figures"]["changed"] == 0
    assert sum(1 for row in first["rows"].values() if row["authority"] == Authority.CLOUD) == report.cloud_managed
    assert first["figures"]["drifted"] >= report.cloud_edits
    edited = results["everything"][2]
    assert edited["figures"]["changed"] == 3 and len(edited["changed"]) == 1  # only the flip moves authority
    for name in ("nothing", "as it happens"):
        for step, (state, expected) in enumerate(zip(results[name], results["everything"], strict=True)):
            for part in expected:
                assert state[part] == expected[part], (name, step, part)
