"""The keyed audit chain and its published heads: what someone who can write the audit table, but holds neither the
chain key nor the published heads, can no longer do unseen; and the batched writer."""

import json
import os
import socket
import threading

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.utils import timezone

from portal import audit as audit_module
from portal.audit import AuditError, audit_record, audit_record_many
from portal.audit_chain import GENESIS_HASH, chain_key, compute_hash, verify_chain
from portal.audit_head import HeadError, publish_head, publish_verified_head, read_heads
from portal.models import AuditEvent
from tests.portal.test_audit import _record, _tamper

pytestmark = pytest.mark.django_db


def _events(count: int) -> list[AuditEvent]:
    return [_record(reason=f"event {i}") for i in range(count)]


def _publish():
    report = verify_chain(heads=read_heads())
    assert report.broken is None, report.broken
    return publish_head(report)[0]


def _audit_verify(capsys) -> tuple[int, str]:
    """Run manage.py audit_verify; its exit code and what it printed."""
    try:
        call_command("audit_verify")
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out + out.err


def _rewrite_from(event_id: int, *, reason: str, key: bytes | None) -> None:
    """What an attacker with write access does: change one event, then recompute its hash and every later one's
    (with ``key``; None: plain SHA-256, as before the chain was keyed) so that every link holds again."""
    events = list(AuditEvent.objects.filter(pk__gte=event_id).order_by("id"))
    prev = AuditEvent.objects.filter(pk__lt=event_id).order_by("-id").values_list("hash", flat=True).first()
    events[0].reason = reason
    for event in events:
        event.prev_hash = prev or GENESIS_HASH
        event.hash = compute_hash(event, key)
        prev = event.hash
        _tamper(
            "UPDATE portal_auditevent SET reason = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [event.reason, event.prev_hash, event.hash, event.pk],
        )


# -- what the chain alone finds -----------------------------------------------------------------------------------


def test_events_are_keyed_numbered_in_sequence_and_verify(settings):
    events = _events(4)
    assert [event.pk for event in events] == list(range(events[0].pk, events[0].pk + 4))
    key = settings.AUDIT_CHAIN_KEY.encode() or None
    report = verify_chain()
    assert report[:2] == (AuditEvent.objects.count(), None)
    assert report.unkeyed == 0 and report.keyed_from == AuditEvent.objects.order_by("id").first().pk
    assert "each keyed (HMAC-SHA256)" in report.summary()
    # The stored hash is the keyed one, not the plain SHA-256 of the same content.
    assert events[1].hash != compute_hash(events[1]) and events[1].hash == compute_hash(events[1], key or _dev_key())


def _dev_key() -> bytes:
    from portal.audit_chain import chain_key

    return chain_key()


def test_renumbered_ids_are_found(capsys):
    events = _events(4)
    _tamper("UPDATE portal_auditevent SET id = id + 100", [])
    report = verify_chain()
    assert report.broken is not None and report.broken.event_id == events[0].pk + 100
    assert "renumbered" in report.broken.reason
    code, output = _audit_verify(capsys)
    assert code == 1 and f"#{events[0].pk + 100}" in output


def test_a_rewrite_with_recomputed_plain_hashes_is_found():
    events = _events(5)
    _rewrite_from(events[2].pk, reason="nothing happened", key=None)
    report = verify_chain()
    assert report.broken is not None and report.broken.event_id == events[2].pk
    assert "rewritten by someone who does not hold the key" in report.broken.reason


def test_a_rewrite_with_recomputed_hashes_under_another_key_is_found():
    events = _events(5)
    _rewrite_from(events[2].pk, reason="nothing happened", key=b"a guess that is not the portal's key, 32+ chars")
    report = verify_chain()
    assert report.broken is not None and report.broken.event_id == events[2].pk
    assert "content no longer matches its hash" in report.broken.reason


def test_a_rewrite_by_someone_holding_the_key_is_found_against_the_published_head(capsys):
    events = _events(5)
    _publish()
    _rewrite_from(events[2].pk, reason="nothing happened", key=_dev_key())
    assert verify_chain().broken is None  # the key alone makes a consistent forgery ...
    code, output = _audit_verify(capsys)  # ... which the head published before it does not match
    assert code == 1
    assert f"#{events[-1].pk}" in output and "differs from the head published at" in output


# -- what the published heads find --------------------------------------------------------------------------------


def test_deleting_the_newest_events_is_found_as_truncation(capsys):
    events = _events(6)
    head = _publish()
    assert head.head_id == events[-1].pk and head.count == AuditEvent.objects.count()
    _tamper("DELETE FROM portal_auditevent WHERE id > %s", [events[3].pk])
    assert verify_chain().broken is None  # what the chain alone cannot see
    code, output = _audit_verify(capsys)
    assert code == 1
    assert f"the newest event is #{events[3].pk}, but the head published at {head.published_at}" in output
    assert f"names event #{events[-1].pk}" in output and "truncation" in output


def test_deleting_every_event_is_found(capsys):
    _events(3)
    head = _publish()
    _tamper("DELETE FROM portal_auditevent", [])
    code, output = _audit_verify(capsys)
    assert code == 1
    assert f"the audit log is empty, but the head published at {head.published_at}" in output
    assert "every event was deleted" in output


def test_deleting_events_before_a_published_head_is_found_even_with_relinked_hashes(capsys):
    """Legacy (unkeyed) events carry no id in their hash: removing one and relinking the rest is found by the count
    the head published."""
    legacy = _legacy_events(4)
    _publish()
    _tamper("DELETE FROM portal_auditevent WHERE id = %s", [legacy[1].pk])
    _rewrite_from(legacy[2].pk, reason=legacy[2].reason, key=None)
    assert verify_chain().broken is None
    code, output = _audit_verify(capsys)
    assert code == 1 and "differs from the head published" in output


def test_the_periodic_publication_publishes_nothing_after_a_truncation(settings):
    events = _events(4)
    publish_verified_head()
    path = read_heads.__globals__["head_file"]()
    published = path.read_bytes()
    _tamper("DELETE FROM portal_auditevent WHERE id = %s", [events[-1].pk])
    with pytest.raises(HeadError, match=rf"no head was published: event #{events[-1].pk}: .* is missing"):
        publish_verified_head()
    assert path.read_bytes() == published


def test_the_head_file_is_only_ever_appended_to(settings, tmp_path):
    path = tmp_path / "heads" / "audit-heads.jsonl"
    settings.AUDIT_HEAD_FILE = str(path)
    _events(2)
    first, places = publish_verified_head()
    assert places == [str(path)]
    before = path.read_bytes()
    inode = os.stat(path).st_ino
    _events(3)
    second, _ = publish_verified_head()
    after = path.read_bytes()
    assert after.startswith(before) and os.stat(path).st_ino == inode
    lines = after.decode().splitlines()
    assert [json.loads(line)["head_id"] for line in lines] == [first.head_id, second.head_id]
    assert second.count == first.count + 3 and second.head_id == first.head_id + 3
    assert read_heads() == [first, second]


def test_a_malformed_head_file_is_reported_not_ignored(settings, tmp_path, capsys):
    path = tmp_path / "heads.jsonl"
    path.write_text('{"head_id": 1}\n')
    settings.AUDIT_HEAD_FILE = str(path)
    with pytest.raises(Exception, match="line 1, is not a published audit head"):
        call_command("audit_verify")


def test_the_head_goes_to_syslog_and_a_syslog_archive_can_be_verified_against(settings, tmp_path, capsys):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    settings.AUDIT_HEAD_FILE = ""
    settings.AUDIT_HEAD_SYSLOG = f"127.0.0.1:{receiver.getsockname()[1]}"
    events = _events(3)
    head, places = publish_verified_head()
    assert places == [f"syslog {settings.AUDIT_HEAD_SYSLOG}"]
    message = receiver.recv(4096).decode()
    receiver.close()
    assert "soa-portal-audit-head: " in message and f'"head_id":{head.head_id}' in message
    archive = tmp_path / "auth.log"
    archive.write_text(f"Nov 30 14:00:00 portal {message.lstrip('<0123456789>')}\n")
    _tamper("DELETE FROM portal_auditevent WHERE id = %s", [events[-1].pk])
    with pytest.raises(SystemExit):
        call_command("audit_verify", "--heads", str(archive))
    assert "truncation" in capsys.readouterr().err


def test_audit_verify_publishes_the_head_after_a_clean_run(capsys):
    events = _events(2)
    code, output = _audit_verify(capsys)
    assert code == 0 and f"Published head #{events[-1].pk}" in output
    assert read_heads()[-1].head_id == events[-1].pk


# -- the history written before the key -----------------------------------------------------------------------------


def _legacy_events(count: int) -> list[AuditEvent]:
    """Events as the portal wrote them before the chain was keyed: plain SHA-256, no id in the hash."""
    from django.utils import timezone

    events = []
    prev = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH
    with transaction.atomic():
        for i in range(count):
            event = AuditEvent(occurred_at=timezone.now(), actor_name="system", action="test.legacy",
                               reason=f"legacy {i}", prev_hash=prev)  # fmt: skip
            event.hash = compute_hash(event)
            event.save(force_insert=True)
            events.append(event)
            prev = event.hash
    return events


def test_history_from_before_the_key_is_verified_by_plain_sha256_and_said_so():
    legacy = _legacy_events(3)
    keyed = _events(2)
    assert keyed[0].prev_hash == legacy[-1].hash and keyed[0].pk == legacy[-1].pk + 1
    report = verify_chain()
    assert report.broken is None and report.unkeyed == 3 and report.keyed_from == keyed[0].pk
    assert f"the first 3 (up to #{legacy[-1].pk}) predate the chain key and are verified by plain SHA-256 only" in (
        report.summary()
    )


def test_the_key_cannot_be_dropped_from_the_middle_of_the_chain():
    _legacy_events(2)
    keyed = _events(3)
    _rewrite_from(keyed[1].pk, reason="rewritten", key=None)
    report = verify_chain()
    assert report.broken is not None and report.broken.event_id == keyed[1].pk
    assert f"#{keyed[0].pk} and later events are keyed" in report.broken.reason


def test_nothing_is_recorded_without_a_key_when_not_debugging(settings):
    settings.AUDIT_CHAIN_KEY = ""
    settings.AUDIT_CHAIN_DEV_KEY_FILE = ""
    with pytest.raises(AuditError, match=r"AUDIT_CHAIN_KEY \(or AUDIT_CHAIN_KEY_FILE\) is not set"):
        _record()
    assert not AuditEvent.objects.exists()


def test_a_configured_key_is_the_one_used(settings):
    settings.AUDIT_CHAIN_KEY = "k" * 40
    event = _record()
    assert event.hash == compute_hash(event, b"k" * 40)


# -- the triggers ---------------------------------------------------------------------------------------------------

_INSERT = (
    "{verb} INTO portal_auditevent (id, occurred_at, actor_name, action, object_type, object_id, object_repr, reason,"
    " correlation_id, prev_hash, hash) VALUES (%s, %s, 'x', 'forged', '', '', '', '', '', %s, %s)"
)


def _insert(verb: str, event_id: int, hash_: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_INSERT.format(verb=verb), [event_id, "2026-01-01T00:00:00+00:00", GENESIS_HASH, hash_])


@pytest.mark.skipif("connection.vendor != 'sqlite'")
@pytest.mark.parametrize("verb", ["REPLACE", "INSERT OR REPLACE", "INSERT"])
def test_sqlite_refuses_an_insert_over_an_existing_id(verb):
    events = _events(3)
    with pytest.raises((DatabaseError, IntegrityError), match="append-only"):
        _insert(verb, events[1].pk, "f" * 64)
    assert AuditEvent.objects.get(pk=events[1].pk).hash == events[1].hash


@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_sqlite_refuses_a_replace_over_an_existing_hash_and_a_backdated_insert():
    events = _events(3)
    with pytest.raises(DatabaseError, match="append-only"):
        _insert("REPLACE", events[-1].pk + 10, events[0].hash)  # would delete events[0], which holds that hash
    _tamper("DELETE FROM portal_auditevent WHERE id = %s", [events[1].pk])
    with pytest.raises(DatabaseError, match="append-only"):
        _insert("INSERT", events[1].pk, "e" * 64)  # into the gap
    assert list(AuditEvent.objects.values_list("pk", flat=True).order_by("id")) == [events[0].pk, events[2].pk]


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_postgresql_has_no_path_to_replace_an_event():
    events = _events(2)
    with pytest.raises(IntegrityError):
        _insert("INSERT", events[0].pk, "f" * 64)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _INSERT.format(verb="INSERT") + " ON CONFLICT (id) DO UPDATE SET reason = 'forged'",
            [events[0].pk, "2026-01-01T00:00:00+00:00", GENESIS_HASH, "f" * 64],
        )
    assert AuditEvent.objects.get(pk=events[0].pk).reason == "event 0"


def test_the_writer_still_appends_through_the_guard():
    _events(2)
    assert verify_chain()[:2] == (2, None)


# -- the batched writer ---------------------------------------------------------------------------------------------


def test_audit_record_many_appends_in_order_and_chains_with_single_appends():
    first = _record(reason="before")
    with transaction.atomic():
        batch = audit_record_many([
            {"actor": None, "action": "test.batch", "object_id": "1", "after": {"password": "p", "n": 1}},
            {"actor": None, "action": "test.batch", "object_type": "thing", "object_id": "2", "reason": "two"},
            {"actor": None, "action": "test.batch", "obj": first},
        ])  # fmt: skip
    last = _record(reason="after")
    assert [event.pk for event in batch] == [first.pk + 1, first.pk + 2, first.pk + 3]
    assert batch[0].prev_hash == first.hash and last.prev_hash == batch[-1].hash
    stored = AuditEvent.objects.get(pk=batch[0].pk)
    assert stored.after == {"password": "********", "n": 1} and stored.hash == batch[0].hash
    assert AuditEvent.objects.get(pk=batch[2].pk).object_id == str(first.pk)
    assert verify_chain()[:2] == (5, None)


def test_audit_record_many_stores_what_it_hashed_through_each_database_writer():
    """On PostgreSQL the batch goes in with COPY: the rows read back are the events as hashed, field for field, and
    a second batch cannot reuse the first's ids (the key holds for COPY as for INSERT)."""
    when = timezone.now()
    with transaction.atomic():
        batch = audit_record_many([
            {"actor": None, "action": "test.copy", "object_type": "t", "object_id": str(n), "object_repr": "tab\there",
             "before": {"quote": "it's \"x\"", "n": n, "when": when}, "after": {"list": [1, None, "\\back"]},
             "reason": "line\nbreak", "correlation_id": f"c-{n}"}
            for n in range(3)
        ])  # fmt: skip
    stored = {event.pk: event for event in AuditEvent.objects.filter(action="test.copy")}
    for event in batch:
        row = stored[event.pk]
        assert (row.before, row.after, row.reason, row.object_repr, row.correlation_id, row.hash) == (
            event.before,
            event.after,
            event.reason,
            event.object_repr,
            event.correlation_id,
            event.hash,
        )
        assert compute_hash(row, chain_key()) == row.hash
    insert_again = audit_module._copy_in if connection.vendor == "postgresql" else AuditEvent.objects.bulk_create
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_again(batch[:1])
    assert verify_chain()[:2] == (3, None)


def test_audit_record_many_records_nothing_when_one_event_is_refused():
    with pytest.raises(AuditError, match="needs an action code"), transaction.atomic():
        audit_record_many([{"actor": None, "action": "test.ok"}, {"actor": None, "action": ""}])
    assert not AuditEvent.objects.exists()
    with transaction.atomic():
        assert audit_record_many([]) == []


@pytest.mark.django_db(transaction=True)
def test_audit_record_many_refuses_to_run_outside_a_transaction():
    with pytest.raises(AuditError, match="outside a transaction"):
        audit_record_many([{"actor": None, "action": "test.outside"}])
    assert not AuditEvent.objects.exists()


# -- verification holds no lock ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_verification_lets_audited_writes_commit_while_it_runs():
    """Between its chunks the verification holds no transaction, so on SQLite another connection can take the write
    lock and commit an audited change (the old verification held the write lock for the whole run)."""
    _events(7)
    outcomes = []

    def write_elsewhere() -> None:
        try:
            with transaction.atomic():
                audit_record(actor=None, action="test.concurrent")
            outcomes.append("committed")
        except Exception as exc:  # the outcome is the assertion: any failure is reported, not swallowed
            outcomes.append(repr(exc))
        finally:
            connections.close_all()

    def between_chunks(_checked: int) -> None:
        assert not connection.in_atomic_block
        writer = threading.Thread(target=write_elsewhere)
        writer.start()
        writer.join()

    report = verify_chain(chunk_size=3, progress=between_chunks)
    assert outcomes == ["committed"] * 3
    assert report[:2] == (7, None)  # what was appended after the start is left to the next verification
    assert verify_chain()[:2] == (10, None)


def test_a_head_that_cannot_be_published_is_a_clear_error(settings, tmp_path):
    _events(1)
    settings.AUDIT_HEAD_FILE = ""
    settings.AUDIT_HEAD_SYSLOG = str(tmp_path / "no-such-socket")
    with pytest.raises(Exception, match="could not be sent to AUDIT_HEAD_SYSLOG"):
        call_command("audit_verify")


def test_the_head_goes_to_a_local_syslog_socket(settings, tmp_path):
    path = tmp_path / "log.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(10)
    settings.AUDIT_HEAD_SYSLOG = str(path)
    head, places = publish_verified_head()
    message = receiver.recv(4096).decode()
    receiver.close()
    assert places == [settings.AUDIT_HEAD_FILE, f"syslog {path}"]
    assert message == f"<38>soa-portal-audit-head: {head.line()}"
