"""Reasons longer than portal.limits.REASON_MAX_LENGTH are refused by the services themselves (not only by the pages'
forms), with the limit in the message, and nothing is written."""

import pytest
from django.db import transaction
from django.utils import timezone

from portal.limits import REASON_MAX_LENGTH
from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority
from soa.models import ChangeBatch, ChangeRequest
from soa.services import SoaError
from soa.services.accepted_domains import accepted_domains_replace
from soa.services.change_batches import change_batch_create
from soa.services.changes import ChangeValidationError, change_request_cancel, change_request_create
from tests.soa.test_wave_support import DOMAIN, make_mailbox

pytestmark = pytest.mark.django_db

LONG = "x" * (REASON_MAX_LENGTH + 1)
SET = {"op": "set_custom_attribute", "attribute": "CustomAttribute3", "value": "x"}


@pytest.fixture(autouse=True)
def accepted_domains():
    with transaction.atomic():
        accepted_domains_replace(
            domains=[{"DomainName": DOMAIN, "DomainType": "Authoritative", "Default": True}], fetched_at=timezone.now()
        )


def test_a_change_request_with_a_reason_too_long_is_refused_on_the_reason_field(make_user):
    helpdesk = make_user("hugo", Role.HELPDESK)
    mailbox = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    with pytest.raises(ChangeValidationError) as refused:
        change_request_create(
            actor=helpdesk, mailbox_id=mailbox.pk, operations=[SET], reason=LONG,
            base_version=mailbox.version, idempotency_key="long-reason",
        )  # fmt: skip
    (error,) = refused.value.errors  # the edit itself is valid: only its reason is refused
    assert error.field == "reason" and f"{REASON_MAX_LENGTH:,}" in error.message
    assert not ChangeRequest.objects.exists()


def test_a_cancel_or_a_bulk_edit_with_a_reason_too_long_changes_nothing(make_user):
    helpdesk = make_user("hugo", Role.HELPDESK)
    mailbox = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    request = change_request_create(
        actor=helpdesk, mailbox_id=mailbox.pk, operations=[SET], reason="ticket 1",
        base_version=mailbox.version, idempotency_key="short-reason",
    )  # fmt: skip
    events = AuditEvent.objects.count()
    with pytest.raises(SoaError, match="too long"):
        change_request_cancel(actor=helpdesk, request_id=request.pk, reason=LONG)
    request.refresh_from_db()
    assert request.is_open and AuditEvent.objects.count() == events
    with pytest.raises(SoaError, match="too long"):
        change_batch_create(actor=helpdesk, lines=[f"ann.archer@{DOMAIN},show"], file_name="x.csv", reason=LONG,
                            idempotency_key="bulk-long")  # fmt: skip
    assert not ChangeBatch.objects.exists()
