"""Change requests (soa.services.changes): scope and denied attempts, validation through the database, conflicts,
idempotency, approval with the waves' rules, cancel, the apply job queued by name, and the selector."""

import datetime as dt

import django_rq
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs
from soa.choices import Authority, ChangeRoute, ChangeState
from soa.models import AcceptedDomain, ChangeRequest, Mailbox, RemovedAddress
from soa.selectors import accepted_domains_known, change_requests_for
from soa.services import SoaError
from soa.services.accepted_domains import accepted_domains_replace
from soa.services.changes import (
    ChangeConflict,
    ChangeValidationError,
    change_request_approve,
    change_request_cancel,
    change_request_create,
    change_request_reject,
    check_settings,
    removed_addresses_record,
)
from tests.soa.test_wave_support import DOMAIN, FINANCE, SALES, events, last_event, make_mailbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return {
        "help": make_user("hugo", Role.HELPDESK),
        "help2": make_user("hanna", Role.HELPDESK),
        "sales_help": make_user("sid", Role.HELPDESK, scopes=(SALES,)),
        "approver": make_user("anna", Role.APPROVER),
        "finance_approver": make_user("fred", Role.APPROVER, scopes=(FINANCE,)),
        "auditor": make_user("audrey", Role.AUDITOR),
    }


@pytest.fixture(autouse=True)
def accepted_domains():
    accepted_domains_known_now()


def accepted_domains_known_now():
    with transaction.atomic():
        accepted_domains_replace(
            domains=[{"DomainName": DOMAIN, "DomainType": "Authoritative", "Default": True},
                     {"DomainName": "Contoso.onmicrosoft.com", "DomainType": "Authoritative"}],
            fetched_at=timezone.now(),
        )  # fmt: skip


_keys = iter(range(1, 1_000_000))


def create(actor, mailbox, *operations, reason="ticket 4711", key=None, version=None):
    return change_request_create(
        actor=actor, mailbox_id=mailbox.pk, operations=list(operations), reason=reason,
        base_version=mailbox.version if version is None else version, idempotency_key=key or f"form-{next(_keys)}",
    )  # fmt: skip


def add(address):
    return {"op": "add_alias", "address": address}


def primary(address):
    return {"op": "make_primary", "address": address}


# -- making a request ------------------------------------------------------------------------------------------------


def test_an_alias_on_a_cloud_mailbox_is_ready_to_apply_through_exchange_then_ad(people):
    ann = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    request = create(people["help"], ann, add(f"ann.a@{DOMAIN}"))
    assert request.state == ChangeState.VALIDATED and request.route == ChangeRoute.EXO_THEN_AD
    assert not request.needs_approval and request.approval_expires_at is None
    assert request.desired == {"EmailAddresses": [f"SMTP:ann.archer@{DOMAIN}", f"smtp:ann.a@{DOMAIN}"]}
    assert request.base_version == ann.version and request.correlation_id
    event = last_event("soa.change.requested", request)
    assert event.actor == people["help"] and event.reason == "ticket 4711"
    assert event.after["state"] == "VALIDATED" and event.after["operations"] == [
        {"op": "add_alias", "address": f"smtp:ann.a@{DOMAIN}"}
    ]


def test_an_ad_managed_mailbox_is_edited_from_its_ad_values_in_ad_only(people):
    ann = make_mailbox("Ann Archer", authority=Authority.ON_PREM)
    ann.ad_values = {**ann.ad_values, "CustomAttribute1": "contractor"}
    ann.save()
    request = create(people["help"], ann, {"op": "clear_custom_attribute", "attribute": "CustomAttribute1"})
    assert request.route == ChangeRoute.AD_ONLY
    assert (request.before, request.desired) == ({"CustomAttribute1": "contractor"}, {"CustomAttribute1": None})
    assert last_event("soa.change.requested", request).after["route"] == "AD_ONLY"


def test_a_primary_change_waits_for_approval_by_default(people, settings):
    ann = make_mailbox("Ann Archer", aliases=(f"a.archer@{DOMAIN}",))
    request = create(people["help"], ann, primary(f"a.archer@{DOMAIN}"))
    assert request.state == ChangeState.PENDING_APPROVAL and request.needs_approval
    assert request.approval_expires_at == request.created_at + dt.timedelta(days=settings.CHANGE_APPROVAL_DAYS)
    assert last_event("soa.change.requested", request).after["state"] == "PENDING_APPROVAL"


def test_the_operations_needing_approval_are_a_setting(people, settings):
    settings.CHANGE_APPROVAL_OPERATIONS = ["add_alias"]
    request = create(people["help"], make_mailbox("Ann Archer"), add(f"x@{DOMAIN}"))
    assert request.state == ChangeState.PENDING_APPROVAL
    settings.CHANGE_APPROVAL_OPERATIONS = ["add_alias", "make_primay"]
    with pytest.raises(ImproperlyConfigured, match="unknown operations: make_primay"):
        create(people["help"], make_mailbox("Bob Baker"), add(f"y@{DOMAIN}"))
    assert [error.id for error in check_settings()] == ["soa.E001"]


def test_a_reason_is_required_unless_configured_otherwise(people, settings):
    ann = make_mailbox("Ann Archer")
    with pytest.raises(ChangeValidationError) as refused:
        create(people["help"], ann, add(f"bad@@{DOMAIN}"), reason="  ")
    assert [error.field for error in refused.value.errors] == ["EmailAddresses", "reason"]
    settings.CHANGE_REASON_REQUIRED = False
    assert create(people["help"], ann, add(f"x@{DOMAIN}"), reason="").reason == ""


def test_a_validation_error_writes_nothing(people):
    ann = make_mailbox("Ann Archer")
    before = AuditEvent.objects.count()
    with pytest.raises(ChangeValidationError) as refused:
        create(people["help"], ann, add("ann@fabrikam.com"), {"op": "set_custom_attribute", "attribute": "DisplayName",
                                                              "value": "Ann"})  # fmt: skip
    assert [(e.field, e.operation) for e in refused.value.errors] == [("EmailAddresses", 0), ("DisplayName", 1)]
    assert not ChangeRequest.objects.exists() and AuditEvent.objects.count() == before


def test_an_address_another_mailbox_uses_is_named_only_when_the_user_may_see_it(people):
    make_mailbox("Bob Baker", SALES)
    make_mailbox("Fay Fisher", FINANCE)
    ann = make_mailbox("Ann Archer", SALES)
    with pytest.raises(ChangeValidationError, match=rf"Bob.Baker@{DOMAIN} is already used by Bob Baker \(bob.baker"):
        create(people["sales_help"], ann, add(f"Bob.Baker@{DOMAIN}"))
    with pytest.raises(ChangeValidationError, match=rf"fay.fisher@{DOMAIN} is already used by another mailbox\."):
        create(people["sales_help"], ann, add(f"fay.fisher@{DOMAIN}"))


def test_an_address_another_open_request_adds_is_taken(people):
    create(people["help"], make_mailbox("Bob Baker"), add(f"team@{DOMAIN}"))
    with pytest.raises(ChangeValidationError, match="already used by Bob Baker .* \\(in a change not yet applied\\)"):
        create(people["help2"], make_mailbox("Ann Archer"), add(f"TEAM@{DOMAIN}"))


def test_an_address_removed_from_another_mailbox_cools_down(people, settings):
    settings.ADDRESS_COOLDOWN_HOURS = 48
    bob = make_mailbox("Bob Baker", aliases=(f"sales@{DOMAIN}",))
    request = create(people["help"], bob, {"op": "remove_alias", "address": f"sales@{DOMAIN}"})
    removed_at = timezone.now() - dt.timedelta(hours=47)
    with transaction.atomic():
        [row] = removed_addresses_record(request=request, at=removed_at)
    assert (row.prefix, row.address, row.mailbox_id) == ("smtp", f"sales@{DOMAIN}", bob.pk)
    # What the apply job and the next inventory will have done: the request applied, the address gone.
    ChangeRequest.objects.filter(pk=request.pk).update(state=ChangeState.APPLIED)
    bob.addresses.filter(address=f"sales@{DOMAIN}").delete()
    bob.ad_values = bob.exo_values = {**bob.ad_values, "EmailAddresses": [f"SMTP:bob.baker@{DOMAIN}"]}
    bob.save()
    ann = make_mailbox("Ann Archer")
    with pytest.raises(ChangeValidationError) as refused:
        create(people["help"], ann, add(f"sales@{DOMAIN}"))
    [error] = refused.value.errors
    assert error.message.startswith(f"sales@{DOMAIN} was removed from another mailbox recently; it can be used again")
    assert "in 1 h (from" in error.message or "in 59 min (from" in error.message
    # Putting it back on the mailbox it came from is undoing a mistake, not reusing the address.
    back = create(people["help"], bob, add(f"sales@{DOMAIN}"))
    assert back.state == ChangeState.VALIDATED
    change_request_cancel(actor=people["help"], request_id=back.pk)
    RemovedAddress.objects.update(removed_at=timezone.now() - dt.timedelta(hours=49))
    assert create(people["help"], ann, add(f"sales@{DOMAIN}")).state == ChangeState.VALIDATED


def test_smtp_addresses_are_refused_while_the_accepted_domains_are_stale(people, settings):
    stale = timezone.now() - dt.timedelta(seconds=settings.ACCEPTED_DOMAINS_TTL_SECONDS + 1)
    AcceptedDomain.objects.update(fetched_at=stale)
    assert accepted_domains_known() is None
    with pytest.raises(ChangeValidationError, match="accepted domains is not known or out of date"):
        create(people["help"], make_mailbox("Ann Archer"), add(f"x@{DOMAIN}"))
    accepted_domains_known_now()
    assert accepted_domains_known() == {DOMAIN, "contoso.onmicrosoft.com"}


def test_replacing_the_accepted_domains_is_audited_only_when_they_change():
    count = len(events("soa.accepted_domains.changed"))
    accepted_domains_known_now()
    assert len(events("soa.accepted_domains.changed")) == count
    with transaction.atomic():
        accepted_domains_replace(domains=[{"DomainName": "new.example.com"}], fetched_at=timezone.now())
    event = events("soa.accepted_domains.changed")[-1]
    assert event.before == {"domains": ["contoso.onmicrosoft.com", DOMAIN]}
    assert event.after == {"domains": ["new.example.com"]}
    with pytest.raises(SoaError, match="listed no accepted domains"), transaction.atomic():
        accepted_domains_replace(domains=[], fetched_at=timezone.now())


# -- scope, conflicts, idempotency --------------------------------------------------------------------------------


def test_a_crafted_request_outside_the_actors_scope_is_refused_and_audited(people):
    fay = make_mailbox("Fay Fisher", FINANCE)
    with pytest.raises(SoaError, match=f"There is no mailbox #{fay.pk} you may edit."):
        create(people["sales_help"], fay, add(f"x@{DOMAIN}"))
    assert not ChangeRequest.objects.exists()
    event = last_event("soa.change.denied", fay)
    assert event.actor == people["sales_help"] and event.after["attempted"] == "create"
    assert event.after["detail"] == [{"op": "add_alias", "address": f"x@{DOMAIN}"}]
    with pytest.raises(SoaError, match="There is no mailbox"):
        create(people["approver"], fay, add(f"x@{DOMAIN}"))  # no mailbox_edit at all
    assert last_event("soa.change.denied", fay).actor == people["approver"]
    with pytest.raises(SoaError, match="There is no mailbox #999999 you may edit."):
        change_request_create(actor=people["help"], mailbox_id=999999, operations=[], reason="x", base_version=1,
                              idempotency_key="k")  # fmt: skip


def test_an_edit_from_a_stale_page_is_a_conflict_carrying_the_current_values(people):
    ann = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    stale = ann.version
    Mailbox.objects.filter(pk=ann.pk).update(
        version=stale + 1, exo_values={**ann.exo_values, "CustomAttribute1": "contractor"}
    )
    with pytest.raises(ChangeConflict, match="Ann Archer .* changed since you opened it; nothing was saved") as refused:
        create(people["help"], ann, {"op": "set_custom_attribute", "attribute": "CustomAttribute1", "value": "x"},
               version=stale)  # fmt: skip
    assert refused.value.version == stale + 1 and refused.value.current["CustomAttribute1"] == "contractor"
    assert not ChangeRequest.objects.exists()


def test_a_double_submitted_form_makes_one_request(people):
    ann = make_mailbox("Ann Archer")
    first = create(people["help"], ann, add(f"x@{DOMAIN}"), key="form-abc")
    again = create(people["help"], ann, add(f"x@{DOMAIN}"), key="form-abc")
    assert again.pk == first.pk and ChangeRequest.objects.count() == 1
    assert len(events("soa.change.requested", first)) == 1
    with pytest.raises(SoaError, match="This form was already used for another change"):
        create(people["help2"], ann, add(f"y@{DOMAIN}"), key="form-abc")
    with pytest.raises(SoaError, match="missing its submission key"):
        create(people["help"], ann, add(f"y@{DOMAIN}"), key=" " * 3)


def test_one_open_request_per_mailbox(people):
    ann = make_mailbox("Ann Archer")
    first = create(people["help"], ann, add(f"x@{DOMAIN}"))
    with pytest.raises(SoaError, match=f"Change request #{first.pk} for this mailbox is ready to apply; wait"):
        create(people["help2"], ann, add(f"y@{DOMAIN}"))
    with pytest.raises(IntegrityError), transaction.atomic():
        ChangeRequest.objects.create(
            mailbox=ann, requested_by=people["help"], base_version=1, state=ChangeState.PENDING_APPROVAL,
            route=ChangeRoute.AD_ONLY, idempotency_key="other",
        )  # fmt: skip


def test_an_expired_request_is_closed_by_the_next_edit(people):
    ann = make_mailbox("Ann Archer", aliases=(f"a.archer@{DOMAIN}",))
    old = create(people["help"], ann, primary(f"a.archer@{DOMAIN}"))
    ChangeRequest.objects.filter(pk=old.pk).update(approval_expires_at=timezone.now() - dt.timedelta(seconds=1))
    new = create(people["help2"], ann, add(f"x@{DOMAIN}"))
    assert ChangeRequest.objects.get(pk=old.pk).state == ChangeState.EXPIRED and new.state == ChangeState.VALIDATED
    event = last_event("soa.change.expired", old)
    assert event.actor is None and (event.before["state"], event.after["state"]) == ("PENDING_APPROVAL", "EXPIRED")


def test_a_mailbox_missing_from_its_authoritative_side_cannot_be_edited(people):
    ann = make_mailbox("Ann Archer", authority=Authority.CLOUD, in_exo=False)
    with pytest.raises(SoaError, match="the last inventory did not find it there"):
        create(people["help"], ann, add(f"x@{DOMAIN}"))


# -- approval, rejection, cancel -------------------------------------------------------------------------------------


def pending(people, mailbox=None):
    """A primary change waiting for approval: the mailbox's first alias becomes its primary address."""
    mailbox = mailbox or make_mailbox("Ann Archer", aliases=(f"a.archer@{DOMAIN}",))
    alias = mailbox.ad_values["EmailAddresses"][1].partition(":")[2]
    return create(people["help"], mailbox, primary(alias))


def test_an_approver_approves_with_audit(people):
    request = change_request_approve(actor=people["approver"], request_id=pending(people).pk, reason=" fine ")
    assert request.state == ChangeState.APPROVED and request.decided_by == people["approver"]
    event = last_event("soa.change.approved", request)
    assert event.actor == people["approver"] and event.reason == "fine"
    assert (event.before["state"], event.after["state"], event.after["decided_by"]) == (
        "PENDING_APPROVAL", "APPROVED", "anna"
    )  # fmt: skip


def test_the_requester_never_approves_even_holding_the_approver_role(people, make_user):
    both = make_user("bert", Role.HELPDESK, Role.APPROVER)
    request = create(both, make_mailbox("Ann Archer", aliases=(f"a.archer@{DOMAIN}",)), primary(f"a.archer@{DOMAIN}"))
    with pytest.raises(SoaError, match="You asked for this change; another approver must decide on it."):
        change_request_approve(actor=both, request_id=request.pk)
    with pytest.raises(SoaError, match="You asked for this change"):
        change_request_reject(actor=both, request_id=request.pk, reason="no")
    assert ChangeRequest.objects.get(pk=request.pk).state == ChangeState.PENDING_APPROVAL
    assert not events("soa.change.approved") and not events("soa.change.denied")


def test_an_approver_outside_the_mailboxs_ou_is_refused_and_audited(people):
    request = pending(people)
    with pytest.raises(SoaError, match="outside your approval scope"):
        change_request_approve(actor=people["finance_approver"], request_id=request.pk)
    event = last_event("soa.change.denied", request)
    assert event.actor == people["finance_approver"] and event.after["attempted"] == "approve"
    with pytest.raises(SoaError, match="Your roles do not allow approving"):
        change_request_approve(actor=people["help2"], request_id=request.pk)
    assert last_event("soa.change.denied", request).actor == people["help2"]
    assert ChangeRequest.objects.get(pk=request.pk).state == ChangeState.PENDING_APPROVAL


def test_an_expired_request_cannot_be_approved_but_can_be_rejected(people):
    request = pending(people)
    ChangeRequest.objects.filter(pk=request.pk).update(approval_expires_at=timezone.now())
    with pytest.raises(SoaError, match="has expired; the change must be asked for again"):
        change_request_approve(actor=people["approver"], request_id=request.pk)
    request = change_request_reject(actor=people["approver"], request_id=request.pk, reason="too late")
    assert request.state == ChangeState.REJECTED


def test_approval_is_refused_when_the_changed_attributes_moved_since_the_request(people):
    ann = make_mailbox("Ann Archer", aliases=(f"a.archer@{DOMAIN}",))
    request = pending(people, ann)
    values = {**ann.ad_values, "EmailAddresses": [f"SMTP:ann.archer@{DOMAIN}"]}
    Mailbox.objects.filter(pk=ann.pk).update(ad_values=values, version=ann.version + 1)
    with pytest.raises(ChangeConflict, match=r"changed since this request was made \(EmailAddresses\)"):
        change_request_approve(actor=people["approver"], request_id=request.pk)
    assert not events("soa.change.approved")
    # A change elsewhere on the mailbox leaves the preview true: it may be approved.
    other = make_mailbox("Bob Baker", aliases=(f"b.baker@{DOMAIN}",))
    request = pending(people, other)
    Mailbox.objects.filter(pk=other.pk).update(
        ad_values={**other.ad_values, "CustomAttribute1": "moved"}, version=other.version + 1
    )
    assert change_request_approve(actor=people["approver"], request_id=request.pk).state == ChangeState.APPROVED


def test_rejection_needs_a_reason_and_is_audited(people):
    request = pending(people)
    with pytest.raises(SoaError, match="Give a reason for rejecting"):
        change_request_reject(actor=people["approver"], request_id=request.pk, reason=" ")
    request = change_request_reject(actor=people["approver"], request_id=request.pk, reason="not this name")
    assert request.state == ChangeState.REJECTED and request.finished_at is not None
    event = last_event("soa.change.rejected", request)
    assert event.reason == "not this name" and event.after["state"] == "REJECTED"
    with pytest.raises(SoaError, match="is rejected; it can no longer be approved"):
        change_request_approve(actor=people["approver"], request_id=request.pk)


def test_whoever_may_edit_the_mailbox_cancels_a_request_not_yet_applied(people):
    request = pending(people)
    request = change_request_cancel(actor=people["help2"], request_id=request.pk, reason="duplicate")
    assert request.state == ChangeState.CANCELLED
    event = last_event("soa.change.cancelled", request)
    assert event.actor == people["help2"] and event.reason == "duplicate"
    with pytest.raises(SoaError, match="is cancelled; it can no longer be cancelled"):
        change_request_cancel(actor=people["help"], request_id=request.pk)


def test_cancelling_outside_ones_scope_is_refused_and_audited(people):
    request = create(people["help"], make_mailbox("Fay Fisher", FINANCE), add(f"x@{DOMAIN}"))
    with pytest.raises(SoaError, match="Your roles do not allow editing this mailbox."):
        change_request_cancel(actor=people["sales_help"], request_id=request.pk)
    assert last_event("soa.change.denied", request).after["attempted"] == "cancel"
    assert ChangeRequest.objects.get(pk=request.pk).state == ChangeState.VALIDATED


def test_a_request_being_applied_cannot_be_cancelled(people):
    request = create(people["help"], make_mailbox("Ann Archer"), add(f"x@{DOMAIN}"))
    ChangeRequest.objects.filter(pk=request.pk).update(state=ChangeState.APPLYING)
    with pytest.raises(SoaError, match="is being applied; it can no longer be cancelled"):
        change_request_cancel(actor=people["help"], request_id=request.pk)


# -- the selector --------------------------------------------------------------------------------------------------


def test_change_requests_are_listed_for_those_who_may_see_the_mailbox(people):
    fay = make_mailbox("Fay Fisher", FINANCE)
    request = create(people["help"], fay, add(f"x@{DOMAIN}"))
    assert list(change_requests_for(user=people["auditor"], mailbox=fay)) == [request]
    assert list(change_requests_for(user=people["finance_approver"], mailbox=fay)) == [request]
    assert list(change_requests_for(user=people["sales_help"], mailbox=fay)) == []


# -- the apply job, queued by name ---------------------------------------------------------------------------------


@pytest.fixture
def queue():
    queue = django_rq.get_queue(jobs.QUEUE)
    queue.empty()
    yield queue
    queue.empty()


@pytest.mark.django_db(transaction=True)  # the job is queued only after the commit
def test_nothing_is_queued_while_the_apply_job_is_switched_off(people, queue, settings):
    settings.CHANGE_APPLY_ENABLED = False
    create(people["help"], make_mailbox("Ann Archer"), add(f"x@{DOMAIN}"))
    assert queue.count == 0


@pytest.mark.django_db(transaction=True)  # the job is queued only after the commit
def test_a_ready_request_queues_the_apply_job_by_name_after_commit(people, queue, settings):
    assert settings.CHANGE_APPLY_ENABLED is True  # the default, now that the job exists
    ready = create(people["help"], make_mailbox("Ann Archer"), add(f"x@{DOMAIN}"))
    [job] = queue.get_jobs()
    assert (job.func_name, job.args) == (jobs.CHANGE_APPLY_JOB, (ready.pk,))
    waiting = pending(people, make_mailbox("Bob Baker", aliases=(f"b.baker@{DOMAIN}",)))
    assert queue.count == 1
    change_request_approve(actor=people["approver"], request_id=waiting.pk)
    assert [job.args for job in queue.get_jobs()] == [(ready.pk,), (waiting.pk,)]
