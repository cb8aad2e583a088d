"""portal.audit.audit_record_many: several events in one append keep the chain, their order and the masking."""

import pytest
from django.db import transaction

from portal.audit import AuditError, audit_record, audit_record_many, verify_chain
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_events_appended_together_chain_in_order_after_the_ones_before(make_user):
    user = make_user("ann")
    with transaction.atomic():
        first = audit_record(actor=None, action="test.one", object_type="t", object_id="1")
        rows = audit_record_many(
            [
                {"actor": user, "action": "test.two", "object_type": "t", "object_id": "2", "after": {"password": "x"}},
                {"actor": None, "action": "test.three", "obj": user, "reason": "why", "correlation_id": "c-3"},
            ]
        )
    stored = list(AuditEvent.objects.order_by("id"))
    assert [event.action for event in stored] == ["test.one", "test.two", "test.three"]
    assert stored[1].prev_hash == first.hash and stored[2].prev_hash == stored[1].hash
    assert [row.pk for row in rows] == [stored[1].pk, stored[2].pk]
    assert stored[1].after == {"password": "********"} and stored[1].actor == user
    assert stored[2].object_id == str(user.pk) and stored[2].correlation_id == "c-3" and stored[2].reason == "why"
    assert verify_chain() == (3, None)


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_or_without_an_action_nothing_is_written():
    with pytest.raises(AuditError, match="outside a transaction"):
        audit_record_many([{"actor": None, "action": "test.x"}])
    with pytest.raises(AuditError, match="action code"), transaction.atomic():
        audit_record_many([{"actor": None, "action": "test.ok"}, {"actor": None, "action": ""}])
    assert not AuditEvent.objects.exists()
    assert audit_record_many([]) == []
