"""Undo from history (soa.services.undo and its confirm page): an applied edit, or every edit of one correlation id,
becomes a new change request restoring the earlier values, validated and approved like any other edit. History is
never rewritten; a value changed again since is a conflict to acknowledge; only help desk within its scope, or an
administrator, may undo, and a refusal is audited. Edits are made and applied through the real services
(change_request_create, then the apply job's claim and finish with the values Exchange would read back)."""

import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from portal.correlation import correlation_scope
from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, ChangeState
from soa.models import ChangeRequest, Mailbox
from soa.services import SoaError
from soa.services.accepted_domains import accepted_domains_replace
from soa.services.change_apply import DIRECTORY, EXCHANGE, change_request_claim, change_request_finish
from soa.services.changes import ChangeConflict, change_request_approve, change_request_create
from soa.services.undo import UndoDenied, restoring_operations, undo_plans, undo_request_create
from tests.soa.test_wave_support import DOMAIN, FINANCE, SALES, make_mailbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return {
        "help": make_user("hanna", Role.HELPDESK),
        "help2": make_user("henk", Role.HELPDESK),
        "finance_help": make_user("fiona", Role.HELPDESK, scopes=(FINANCE,)),
        "admin": make_user("ada", Role.ADMIN),
        "auditor": make_user("otto", Role.AUDITOR),
        "approver": make_user("april", Role.APPROVER),
    }


@pytest.fixture(autouse=True)
def _domains():
    with transaction.atomic():
        accepted_domains_replace(domains=[{"DomainName": DOMAIN, "DomainType": "Authoritative", "Default": True}],
                                 fetched_at=timezone.now())  # fmt: skip


def _cloud(name: str, **fields) -> Mailbox:
    return make_mailbox(name, authority=Authority.CLOUD, **fields)


def _key() -> str:
    return uuid.uuid4().hex


def applied_edit(actor, mailbox) -> AuditEvent:
    """An edit of CustomAttribute3 by ``actor``, applied to the mailbox's authoritative side (for other modules)."""
    return _edit(actor, mailbox, [_set("CustomAttribute3", "to undo")])


def _edit(actor, mailbox, operations, *, approver=None) -> AuditEvent:
    """Ask for an edit and apply it as the apply job does; the event ``soa.change.applied`` it leaves."""
    mailbox.refresh_from_db()
    request = change_request_create(actor=actor, mailbox_id=mailbox.pk, operations=operations, reason="ticket",
                                    base_version=mailbox.version, idempotency_key=_key())  # fmt: skip
    if request.state == ChangeState.PENDING_APPROVAL:
        change_request_approve(actor=approver, request_id=request.pk, reason="ok")
    with correlation_scope(request.correlation_id):  # as the apply job runs (writeback.jobs.lifecycle)
        change_request_claim(request_id=request.pk)
        side = EXCHANGE if mailbox.authority == Authority.CLOUD else DIRECTORY
        change_request_finish(request_id=request.pk, route=request.route, results={}, side=side,
                              values=ChangeRequest.objects.get(pk=request.pk).desired)  # fmt: skip
    return AuditEvent.objects.filter(action="soa.change.applied", object_id=str(request.pk)).get()


def _versions(*mailboxes) -> dict[int, int]:
    return {m.pk: Mailbox.objects.get(pk=m.pk).version for m in mailboxes}


def _undo(actor, *mailboxes, **target):
    return undo_request_create(actor=actor, versions=_versions(*mailboxes), reason="undo the ticket",
                               idempotency_key=target.pop("key", _key()), **target)  # fmt: skip


def _set(name, value):
    return {"op": "set_custom_attribute", "attribute": name, "value": value}


def test_undo_of_an_applied_edit_is_a_new_request_restoring_the_earlier_value(people):
    ann = _cloud("Ann Archer")
    edit = _edit(people["help"], ann, [_set("CustomAttribute3", "contractor")])
    history = list(AuditEvent.objects.order_by("id").values_list("id", "hash"))
    (request,) = _undo(people["help2"], ann, event_id=edit.pk)
    assert request.state == ChangeState.VALIDATED and request.requested_by == people["help2"]
    assert request.operations == [{"op": "clear_custom_attribute", "attribute": "CustomAttribute3"}]
    assert request.before == {"CustomAttribute3": "contractor"} and request.desired == {"CustomAttribute3": None}
    # Nothing of the history changed: every earlier event is still there with its hash; the undo added events.
    assert list(AuditEvent.objects.filter(id__lte=history[-1][0]).order_by("id").values_list("id", "hash")) == history
    requested = AuditEvent.objects.get(action="soa.change.requested", object_id=str(request.pk))
    assert requested.after["undoes"] == [edit.pk]
    undo = AuditEvent.objects.get(action="soa.change.undo_requested")
    assert undo.actor == people["help2"] and undo.after["events"] == [edit.pk]
    assert undo.after["requests"] == [request.pk] and undo.object_id == str(edit.pk)


def test_a_value_changed_again_since_is_a_conflict_that_must_be_acknowledged(people):
    ann = _cloud("Ann Archer")
    edit = _edit(people["help"], ann, [_set("CustomAttribute1", "contractor")])
    _edit(people["help2"], ann, [_set("CustomAttribute1", "intern")])
    (plan,) = undo_plans(actor=people["help"], event_id=edit.pk)
    assert plan.conflicts == ["CustomAttribute1"]
    assert plan.rows[0]["edited"] == "contractor" and plan.rows[0]["current"] == "intern"
    assert plan.rows[0]["restore"] == "staff"
    with pytest.raises(SoaError, match="changed again"):
        _undo(people["help"], ann, event_id=edit.pk)
    assert not ChangeRequest.objects.filter(state=ChangeState.VALIDATED).exists()
    (request,) = _undo(people["help"], ann, event_id=edit.pk, acknowledge_conflicts=True)
    assert request.desired == {"CustomAttribute1": "staff"} and request.before == {"CustomAttribute1": "intern"}
    assert AuditEvent.objects.get(action="soa.change.undo_requested").after["acknowledged"] is True


def test_undo_of_a_correlation_id_restores_each_mailbox_to_before_its_first_edit(people):
    ann, bob = _cloud("Ann Archer"), _cloud("Bob Baker")
    with correlation_scope("corr-undo-1"):
        first = _edit(people["help"], ann, [_set("CustomAttribute5", "one")])
        _edit(people["help"], ann, [_set("CustomAttribute5", "two"), {"op": "hide_from_address_lists"}])
        _edit(people["help"], bob, [{"op": "add_extension_value", "attribute": "ExtensionCustomAttribute1",
                                     "value": "vip"}])  # fmt: skip
    assert first.correlation_id == "corr-undo-1"
    requests = _undo(people["help2"], ann, bob, correlation_id="corr-undo-1")
    by_mailbox = {r.mailbox_id: r for r in requests}
    assert by_mailbox[ann.pk].desired == {"CustomAttribute5": None, "HiddenFromAddressListsEnabled": False}
    assert by_mailbox[bob.pk].desired == {"ExtensionCustomAttribute1": []}
    undo = AuditEvent.objects.get(action="soa.change.undo_requested")
    assert len(undo.after["events"]) == 3 and undo.object_id == "corr-undo-1"


def test_undoing_a_new_primary_address_goes_through_approval_like_any_other_edit(people):
    ann = _cloud("Ann Archer", aliases=(f"ann.a@{DOMAIN}",))
    edit = _edit(people["help"], ann, [{"op": "make_primary", "address": f"SMTP:ann.a@{DOMAIN}"},
                                       {"op": "add_alias", "address": f"smtp:extra@{DOMAIN}"}],
                 approver=people["approver"])  # fmt: skip
    assert Mailbox.objects.get(pk=ann.pk).primary_smtp == f"ann.a@{DOMAIN}"
    (request,) = _undo(people["help2"], ann, event_id=edit.pk)
    assert request.state == ChangeState.PENDING_APPROVAL and request.needs_approval
    assert set(request.desired["EmailAddresses"]) == {f"SMTP:ann.archer@{DOMAIN}", f"smtp:ann.a@{DOMAIN}"}
    assert request.desired["WindowsEmailAddress"] == f"ann.archer@{DOMAIN}"


def test_only_help_desk_within_scope_or_an_admin_may_undo_and_a_refusal_is_audited(people):
    ann = _cloud("Ann Archer", ou=SALES)
    edit = _edit(people["help"], ann, [_set("CustomAttribute3", "x")])
    for who in ("finance_help", "auditor", "approver"):
        with pytest.raises(UndoDenied):
            _undo(people[who], ann, event_id=edit.pk)
    denied = AuditEvent.objects.filter(action="soa.change.undo_denied")
    assert [e.actor for e in denied.order_by("id")] == [people["finance_help"], people["auditor"], people["approver"]]
    assert not ChangeRequest.objects.filter(state=ChangeState.VALIDATED).exists()
    (request,) = _undo(people["admin"], ann, event_id=edit.pk)
    assert request.requested_by == people["admin"] and request.desired == {"CustomAttribute3": None}


def test_a_stale_confirm_page_an_already_restored_value_and_a_resubmission_change_nothing(people):
    ann = _cloud("Ann Archer")
    edit = _edit(people["help"], ann, [_set("CustomAttribute3", "x")])
    with pytest.raises(ChangeConflict):
        undo_request_create(actor=people["help"], event_id=edit.pk, versions={ann.pk: 1}, reason="r",
                            idempotency_key=_key())  # fmt: skip
    key = _key()
    first = _undo(people["help"], ann, event_id=edit.pk, key=key)
    again = _undo(people["help"], ann, event_id=edit.pk, key=key)
    assert [r.pk for r in again] == [r.pk for r in first]
    assert AuditEvent.objects.filter(action="soa.change.undo_requested").count() == 1
    change_request_claim(request_id=first[0].pk)
    change_request_finish(request_id=first[0].pk, route=first[0].route, results={}, side=EXCHANGE,
                          values=first[0].desired)  # fmt: skip
    with pytest.raises(SoaError, match="nothing to undo"):
        _undo(people["help"], ann, event_id=edit.pk)


def test_only_an_applied_edit_can_be_undone(people):
    ann = _cloud("Ann Archer")
    request = change_request_create(actor=people["help"], mailbox_id=ann.pk, operations=[_set("CustomAttribute3", "x")],
                                    reason="t", base_version=ann.version, idempotency_key=_key())  # fmt: skip
    requested = AuditEvent.objects.get(action="soa.change.requested", object_id=str(request.pk))
    with pytest.raises(SoaError, match="only an applied edit"):
        undo_plans(actor=people["help"], event_id=requested.pk)


def test_restoring_operations_cover_every_kind_of_editable_value():
    current = {"EmailAddresses": ["SMTP:new@x.com", "smtp:old@x.com", "smtp:added@x.com"], "CustomAttribute2": "b",
               "ExtensionCustomAttribute2": ["a", "c"], "HiddenFromAddressListsEnabled": True}  # fmt: skip
    restore = {"EmailAddresses": ["SMTP:old@x.com", "smtp:gone@x.com"], "CustomAttribute2": None,
               "ExtensionCustomAttribute2": ["a", "b"], "HiddenFromAddressListsEnabled": False}  # fmt: skip
    assert restoring_operations(current, restore) == [
        {"op": "make_primary", "address": "SMTP:old@x.com"},
        {"op": "add_alias", "address": "smtp:gone@x.com"},
        {"op": "remove_alias", "address": "SMTP:new@x.com"},
        {"op": "remove_alias", "address": "smtp:added@x.com"},
        {"op": "clear_custom_attribute", "attribute": "CustomAttribute2"},
        {"op": "remove_extension_value", "attribute": "ExtensionCustomAttribute2", "value": "c"},
        {"op": "add_extension_value", "attribute": "ExtensionCustomAttribute2", "value": "b"},
        {"op": "show_in_address_lists"},
    ]
    assert restoring_operations(restore, restore) == []


# -- the pages -------------------------------------------------------------------------------------------------------


def test_the_confirm_page_previews_warns_of_conflicts_and_makes_the_request(client, people):
    ann = _cloud("Ann Archer")
    edit = _edit(people["help"], ann, [_set("CustomAttribute1", "contractor")])
    _edit(people["help2"], ann, [_set("CustomAttribute1", "intern")])
    client.force_login(people["help2"])
    page = client.get(f"/audit/events/{edit.pk}/undo/")
    html = page.content.decode()
    assert page.status_code == 200 and 'data-testid="undo-conflict-warning"' in html and "intern" in html
    key = page.context["form"]["idempotency_key"].value()
    data = {"reason": "wrong ticket", "idempotency_key": key, f"version-{ann.pk}": str(_versions(ann)[ann.pk])}
    refused = client.post(f"/audit/events/{edit.pk}/undo/", data)
    assert refused.status_code == 400 and b"changed again" in refused.content
    done = client.post(f"/audit/events/{edit.pk}/undo/", {**data, "acknowledge_conflicts": "on"})
    assert done.status_code == 200 and b'data-testid="undo-done"' in done.content
    assert ChangeRequest.objects.filter(mailbox=ann, state=ChangeState.VALIDATED, requested_by=people["help2"]).exists()


def test_the_audit_list_links_undoable_edits_for_an_admin_and_never_for_an_auditor(client, people):
    ann = _cloud("Ann Archer")
    edit = _edit(people["help"], ann, [_set("CustomAttribute3", "x")])
    client.force_login(people["admin"])
    html = client.get("/audit/").content.decode()
    assert f'href="/audit/events/{edit.pk}/undo/"' in html
    assert (
        'data-testid="undo-correlation"'
        in client.get("/audit/", {"correlation_id": edit.correlation_id}).content.decode()
    )
    client.force_login(people["auditor"])
    assert 'data-testid="event-undo"' not in client.get("/audit/").content.decode()
    assert client.get(f"/audit/events/{edit.pk}/undo/").status_code == 403
    assert client.post(f"/audit/events/{edit.pk}/undo/", {"reason": "x", "idempotency_key": "k"}).status_code == 403
    client.force_login(people["finance_help"])
    assert client.get(f"/audit/events/{edit.pk}/undo/").status_code == 403


def test_the_timeline_links_an_edit_to_its_undo_for_whoever_may_undo_it(people, client):
    """Help desk has no audit list: the mailbox's timeline is where it finds the undo of an edit in its scope. An
    approver sees the same event without the link."""
    mailbox = _cloud("Tess Timeline")
    event = applied_edit(people["help"], mailbox)
    undo = f'href="/audit/events/{event.pk}/undo/"'
    for person, links in ((people["help2"], True), (people["admin"], True), (people["approver"], False)):
        client.force_login(person)
        page = client.get(f"/mailboxes/{mailbox.pk}/history/")
        assert page.status_code == 200
        assert (undo in page.content.decode()) is links, person.username
