"""The audit log: written only inside transactions, chained, append-only in the database, verifiable."""

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from hypothesis import given
from hypothesis import strategies as st

from portal import audit as audit_module
from portal import audit_triggers
from portal.audit import GENESIS_HASH, MASK, AuditError, audit_record, verify_chain
from portal.correlation import correlation_scope
from portal.models import AuditEvent
from portal.roles import Role
from portal.services import PortalError, role_assign

# Keys of every kind the masking meets: secret-looking ones in several spellings, and ordinary Exchange names.
_KEYS = ["password", "bindPassword", "client_secret", "api-key", "Authorization", "session_id", "Cookie",
         "proxyAddresses", "CustomAttribute1", "state", "monkey", "passenger", "TOKENS"]  # fmt: skip


def _record(actor=None, **kwargs):
    with transaction.atomic():
        return audit_record(actor=actor, action=kwargs.pop("action", "test.thing.done"), **kwargs)


def _tamper(sql: str, params: list) -> None:
    """Change the audit table behind the application's back: disable the triggers, run raw SQL, restore."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # What a database superuser can do: run the session as a replica, which fires no ordinary trigger.
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(sql, params)
            cursor.execute("SET LOCAL session_replication_role = origin")
        else:
            for statement in audit_triggers.statements("sqlite", install=False):
                cursor.execute(statement)
            cursor.execute(sql, params)
            for statement in audit_triggers.statements("sqlite", install=True):
                cursor.execute(statement)


@pytest.mark.django_db(transaction=True)
def test_audit_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(AuditError, match="outside a transaction"):
        audit_record(actor=None, action="test.outside")
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_events_chain_to_their_predecessor(make_user):
    actor = make_user("alice")
    first = _record(actor, before={"a": 1}, after={"a": 2}, reason="why")
    second = _record(actor)
    assert second.prev_hash == first.hash
    assert AuditEvent.objects.order_by("id").first().prev_hash == GENESIS_HASH
    assert first.actor_name == "alice" and first.actor == actor
    assert verify_chain()[:2] == (AuditEvent.objects.count(), None)


@pytest.mark.django_db
def test_system_actor_is_named_system():
    assert _record(None).actor_name == "system"


@pytest.mark.django_db
def test_secret_looking_keys_are_masked_at_any_depth():
    event = _record(
        before={"password": "hunter2", "nested": {"client_secret": "s3", "items": [{"api_key": "k"}]}},
        after={"Authorization": "Bearer abc", "bindPassword": "x", "proxyAddresses": ["SMTP:a@b.c"]},
    )
    event.refresh_from_db()
    assert event.before == {"password": MASK, "nested": {"client_secret": MASK, "items": [{"api_key": MASK}]}}
    assert event.after == {"Authorization": MASK, "bindPassword": MASK, "proxyAddresses": ["SMTP:a@b.c"]}
    assert "hunter2" not in str(AuditEvent.objects.values_list("before", flat=True).get(pk=event.pk))


@pytest.mark.django_db
def test_correlation_id_comes_from_the_current_scope():
    with correlation_scope("job-1234abcd"):
        event = _record()
    assert event.correlation_id == "job-1234abcd"


@pytest.mark.django_db
def test_rolled_back_service_leaves_no_audit_row(make_user):
    admin = make_user("root", Role.ADMIN)
    target = make_user("bob")
    before = AuditEvent.objects.count()
    # The service commits its change and its audit event together; when the enclosing unit of work fails,
    # neither survives.
    with pytest.raises(RuntimeError), transaction.atomic():
        role_assign(actor=admin, user=target, role=Role.HELPDESK, tenant_wide=True)
        assert AuditEvent.objects.count() == before + 1
        raise RuntimeError("the caller's next step failed")
    assert AuditEvent.objects.count() == before
    assert not target.role_assignments.exists()


@pytest.mark.django_db
def test_refused_service_writes_no_audit_row(make_user):
    admin = make_user("root", Role.ADMIN)
    target = make_user("bob", Role.AUDITOR)
    before = AuditEvent.objects.count()
    with pytest.raises(PortalError):
        role_assign(actor=admin, user=target, role=Role.HELPDESK, tenant_wide=True)
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_failure_after_audit_in_same_transaction_rolls_both_back():
    count = AuditEvent.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=None, action="test.doomed")
        raise RuntimeError("the change failed after its audit event was written")
    assert AuditEvent.objects.count() == count


@pytest.mark.django_db
def test_update_through_the_orm_is_refused():
    event = _record()
    event.reason = "rewritten"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(reason="rewritten")
    event.refresh_from_db()
    assert event.reason == ""


@pytest.mark.django_db
def test_delete_through_the_orm_is_refused():
    event = _record()
    with pytest.raises((DatabaseError, IntegrityError), match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql", ["UPDATE portal_auditevent SET reason = 'x' WHERE id = %s", "DELETE FROM portal_auditevent WHERE id = %s"]
)
def test_raw_sql_update_and_delete_are_refused(sql):
    event = _record()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [event.pk])
    assert AuditEvent.objects.filter(pk=event.pk, reason="").exists()


@pytest.mark.django_db
def test_audit_verify_finds_a_row_changed_behind_the_triggers(capsys):
    events = [_record(reason=f"event {i}") for i in range(5)]
    call_command("audit_verify")
    assert "intact" in capsys.readouterr().out
    _tamper("UPDATE portal_auditevent SET reason = %s WHERE id = %s", ["nothing to see", events[2].pk])
    with pytest.raises(SystemExit) as exit_info:
        call_command("audit_verify")
    assert exit_info.value.code == 1
    out = capsys.readouterr()
    assert f"#{events[2].pk}" in out.err and "modified" in out.err


@pytest.mark.django_db
def test_audit_verify_finds_a_deleted_row(capsys):
    events = [_record(reason=f"event {i}") for i in range(4)]
    _tamper("DELETE FROM portal_auditevent WHERE id = %s", [events[1].pk])
    checked, broken = verify_chain()[:2]
    assert broken is not None and broken.event_id == events[2].pk
    assert "removed" in broken.reason


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_an_event_stores_what_masking_every_key_would_store(value):
    """The store skips the walk over every key when no secret-looking word appears in the serialised value; whatever
    the value, what it stores is what masking each key and round-tripping through JSON stores."""
    assert audit_module._stored_json(value) == audit_module._plain_json(audit_module.mask_secrets(value))
