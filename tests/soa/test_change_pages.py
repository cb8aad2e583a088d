"""Editing on the mailbox page (soa.views_changes): editor, preview, confirmation through change_request_create, the
errors a person sees, and the Changes card where requests are followed, approved, rejected and cancelled."""

import re

import pytest
from django.urls import reverse

from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, ChangeState
from soa.models import ChangeRequest, Mailbox
from soa.services.changes import change_request_create
from tests.soa.test_change_requests import accepted_domains_known_now
from tests.soa.test_wave_support import DOMAIN, FINANCE, SALES, last_event, make_mailbox, page_text, signed_in

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def accepted_domains():
    accepted_domains_known_now()


@pytest.fixture
def people(make_user):
    return {
        "help": make_user("hugo", Role.HELPDESK),
        "sales_help": make_user("sid", Role.HELPDESK, scopes=(SALES,)),
        "op": make_user("olga", Role.WAVE_OPERATOR),
        "approver": make_user("anna", Role.APPROVER),
        "auditor": make_user("audrey", Role.AUDITOR),
    }


def _mailbox(name="Ann Archer", ou=SALES, **values):
    base = {
        "EmailAddresses": [f"SMTP:{name.lower().replace(' ', '.')}@{DOMAIN}", f"smtp:ann.old@{DOMAIN}"],
        "WindowsEmailAddress": f"{name.lower().replace(' ', '.')}@{DOMAIN}",
        "CustomAttribute1": "staff",
        "ExtensionCustomAttribute2": ["red"],
        "HiddenFromAddressListsEnabled": False,
    }
    base.update(values)
    return make_mailbox(name, ou, aliases=("ann.old@corp.example.com",), exo_values=dict(base), ad_values=dict(base))


def _url(name, mailbox, op=None):
    return reverse(name, args=[mailbox.pk, op] if op else [mailbox.pk])


def _preview(client, mailbox, op, fields, **extra):
    return client.post(_url("change_preview", mailbox, op), {**fields, "base_version": mailbox.version}, **extra)


def _key(response) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', page_text(response)).group(1)


def _confirm(client, mailbox, op, fields, *, key="form-1", reason="ticket 4711", version=None, **extra):
    data = {**fields, "base_version": mailbox.version if version is None else version, "idempotency_key": key,
            "reason": reason}  # fmt: skip
    return client.post(_url("change_confirm", mailbox, op), data, **extra)


# -- who may edit --------------------------------------------------------------------------------------------------


def test_help_desk_in_scope_is_offered_every_edit_and_identity_stays_read_only(client, people):
    mailbox = _mailbox()
    text = page_text(signed_in(client, people["help"]).get(_url("mailbox_detail", mailbox)))
    for op in ("add_alias", "remove_alias", "make_primary", "set_custom_attribute", "clear_custom_attribute",
               "add_extension_value", "remove_extension_value", "hide_from_address_lists"):  # fmt: skip
        assert f"/edit/{op}/" in text, op
    assert "the portal never edits them" in text
    assert 'id="mailbox-changes"' in text


def test_the_addresses_exchange_keeps_offer_no_remove_or_make_primary(client, people):
    """The MOERA and the routing address stay on the mailbox (exchange-facts §3, §9): the page does not offer to
    remove them or make them primary, which the service would refuse anyway."""
    moera, routing = "smtp:ann.archer@corp.onmicrosoft.com", "smtp:ann.archer@corp.mail.onmicrosoft.com"
    mailbox = _mailbox(EmailAddresses=[f"SMTP:ann.archer@{DOMAIN}", f"smtp:ann.old@{DOMAIN}", moera, routing])
    text = page_text(signed_in(client, people["help"]).get(_url("mailbox_detail", mailbox)))
    for kept in (moera, routing):
        assert f'aria-label="Remove {kept}"' not in text and f'aria-label="Make {kept[5:]} primary"' not in text
    assert f'aria-label="Remove smtp:ann.old@{DOMAIN}"' in text and "(kept by Exchange)" in text


@pytest.mark.parametrize("who", ["op", "approver", "auditor"])
def test_readers_see_the_page_as_before_without_any_edit(client, people, who):
    mailbox = _mailbox()
    response = signed_in(client, people[who]).get(_url("mailbox_detail", mailbox))
    assert response.status_code == 200
    assert "/edit/" not in page_text(response)
    # They see the mailbox, so a crafted edit is refused with the reason (403): it tells them nothing new.
    for refused in (
        client.get(_url("change_edit", mailbox, "add_alias")),
        _preview(client, mailbox, "add_alias", {"address": f"x@{DOMAIN}"}),
    ):
        assert refused.status_code == 403
        # An auditor's POST is refused before the view, for the role (portal.middleware.ReadOnlyAuditorMiddleware).
        auditor_post = who == "auditor" and refused.request["REQUEST_METHOD"] == "POST"
        reason = "auditor role reads everything" if auditor_post else "your roles do not allow editing mailboxes"
        assert reason in refused.content.decode()


# The operator sees the mailbox (403 with the reason); the Sales help desk does not see a Finance mailbox, which is
# answered like a missing one (404).
@pytest.mark.parametrize(("who", "ou", "status"), [("op", SALES, 403), ("sales_help", FINANCE, 404)])
def test_a_crafted_confirmation_without_the_right_is_refused_and_audited(client, people, who, ou, status):
    mailbox = _mailbox(ou=ou)
    response = _confirm(signed_in(client, people[who]), mailbox, "add_alias", {"address": f"x@{DOMAIN}"})
    assert response.status_code == status
    assert not ChangeRequest.objects.exists()
    denied = last_event("soa.change.denied", mailbox)
    assert denied.actor == people[who]
    assert denied.after["detail"] == [{"op": "add_alias", "address": f"x@{DOMAIN}"}]


# -- one edit of each kind -----------------------------------------------------------------------------------------

EDITS = [
    ("add_alias", {"address": f"ann.new@{DOMAIN}"}, "EmailAddresses", f"smtp:ann.new@{DOMAIN}"),
    ("remove_alias", {"address": f"smtp:ann.old@{DOMAIN}"}, "EmailAddresses", f"smtp:ann.old@{DOMAIN}"),
    ("make_primary", {"address": f"ann.old@{DOMAIN}"}, "WindowsEmailAddress", f"ann.old@{DOMAIN}"),
    ("set_custom_attribute", {"attribute": "CustomAttribute3", "value": "cost 42"}, "CustomAttribute3", "cost 42"),
    ("clear_custom_attribute", {"attribute": "CustomAttribute1"}, "CustomAttribute1", "staff"),
    ("add_extension_value", {"attribute": "ExtensionCustomAttribute2", "value": "blue"}, "ExtensionCustomAttribute2",
     "blue"),
    ("remove_extension_value", {"attribute": "ExtensionCustomAttribute2", "value": "red"}, "ExtensionCustomAttribute2",
     "red"),
    ("hide_from_address_lists", {}, "HiddenFromAddressListsEnabled", "Hidden from address lists"),
]  # fmt: skip


@pytest.mark.parametrize(("op", "fields", "attribute", "shown"), EDITS, ids=[e[0] for e in EDITS])
def test_each_edit_previews_then_one_confirmation_makes_one_request(client, people, op, fields, attribute, shown):
    mailbox = _mailbox()
    signed_in(client, people["help"])
    editor = client.get(_url("change_edit", mailbox, op), {**fields, "version": mailbox.version}, **HTMX)
    assert editor.status_code == 200 and 'data-stage="edit"' in page_text(editor)
    assert "<html" not in page_text(editor)  # the attributes card only

    preview = _preview(client, mailbox, op, fields, **HTMX)
    text = page_text(preview)
    assert 'data-stage="preview"' in text, text
    assert shown in text
    assert "Active Directory only; Entra Connect carries it to the cloud on its next cycle." in text
    assert ("Needs approval" in text) == (op == "make_primary")
    assert not ChangeRequest.objects.exists()  # a preview writes nothing

    confirmed = _confirm(client, mailbox, op, fields, key=_key(preview), **HTMX)
    assert confirmed.status_code == 200
    assert confirmed["HX-Trigger"] == "changes-updated"
    change = ChangeRequest.objects.get()
    assert attribute in change.desired
    assert change.state == (ChangeState.PENDING_APPROVAL if op == "make_primary" else ChangeState.VALIDATED)
    assert f"Change request #{change.pk}" in page_text(confirmed)
    assert last_event("soa.change.requested", change).actor == people["help"]


def test_showing_in_address_lists_again(client, people):
    mailbox = _mailbox(HiddenFromAddressListsEnabled=True)
    signed_in(client, people["help"])
    assert "/edit/show_in_address_lists/" in page_text(client.get(_url("mailbox_detail", mailbox)))
    _confirm(client, mailbox, "show_in_address_lists", {})
    assert ChangeRequest.objects.get().desired == {"HiddenFromAddressListsEnabled": False}


def test_a_cloud_managed_mailbox_is_written_to_exchange_online_then_ad(client, people):
    mailbox = _mailbox()
    Mailbox.objects.filter(pk=mailbox.pk).update(authority=Authority.CLOUD)
    preview = _preview(signed_in(client, people["help"]), mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"})
    assert "Exchange Online, then Active Directory." in page_text(preview)


def test_without_javascript_every_step_is_the_whole_page(client, people):
    mailbox = _mailbox()
    signed_in(client, people["help"])
    for response in (
        client.get(_url("change_edit", mailbox, "add_alias"), {"version": mailbox.version}),
        _preview(client, mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"}),
    ):
        text = page_text(response)
        assert "<html" in text and 'id="change-editor"' in text and 'id="mailbox-changes"' in text
    confirmed = _confirm(client, mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"})
    assert "<html" in page_text(confirmed) and "Awaiting approval" not in page_text(confirmed)
    assert ChangeRequest.objects.count() == 1


# -- what goes wrong -------------------------------------------------------------------------------------------------


def test_a_validation_error_highlights_the_field_and_writes_nothing(client, people):
    mailbox = _mailbox()
    signed_in(client, people["help"])
    for response in (
        _preview(client, mailbox, "add_alias", {"address": "ann@nowhere.example"}, **HTMX),
        _confirm(client, mailbox, "add_alias", {"address": "ann@nowhere.example"}, **HTMX),
    ):
        assert response.status_code == 200
        text = page_text(response)
        assert 'data-stage="edit"' in text
        assert re.search(r'<input[^>]*name="address"[^>]*aria-invalid="true"', text), text
        assert "nowhere.example is not one of the tenant&#x27;s accepted domains" in text
    assert not ChangeRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="soa.change.requested").exists()


def test_an_empty_value_is_asked_for_by_name(client, people):
    mailbox = _mailbox()
    response = _preview(signed_in(client, people["help"]), mailbox, "set_custom_attribute",
                        {"attribute": "CustomAttribute2", "value": ""})  # fmt: skip
    assert re.search(r'<input[^>]*name="value"[^>]*aria-invalid="true"', page_text(response))
    assert "Enter a value." in page_text(response)


def test_a_missing_reason_shows_the_preview_again_and_writes_nothing(client, people, settings):
    settings.CHANGE_REASON_REQUIRED = True
    mailbox = _mailbox()
    response = _confirm(signed_in(client, people["help"]), mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"},
                        reason="   ", **HTMX)  # fmt: skip
    text = page_text(response)
    assert 'data-stage="preview"' in text and "Give a reason for this change" in text
    assert re.search(r'<textarea[^>]*name="reason"[^>]*aria-invalid="true"', text)
    assert 'value="form-1"' in text  # the same submission key: still one form
    assert not ChangeRequest.objects.exists()


def test_the_reason_may_be_optional(client, people, settings):
    settings.CHANGE_REASON_REQUIRED = False
    mailbox = _mailbox()
    signed_in(client, people["help"])
    assert "Reason (optional)" in page_text(_preview(client, mailbox, "add_alias", {"address": f"a1@{DOMAIN}"}))
    _confirm(client, mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"}, reason="")
    assert ChangeRequest.objects.get().reason == ""


def test_a_stale_page_shows_the_current_values_and_offers_the_edit_again(client, people):
    mailbox = _mailbox()
    stale = mailbox.version
    Mailbox.objects.filter(pk=mailbox.pk).update(
        version=stale + 1, ad_values={**mailbox.ad_values, "CustomAttribute3": "changed by someone"}
    )
    signed_in(client, people["help"])
    fields = {"attribute": "CustomAttribute3", "value": "mine"}
    for response in (
        client.post(_url("change_preview", mailbox, "set_custom_attribute"), {**fields, "base_version": stale}, **HTMX),
        _confirm(client, mailbox, "set_custom_attribute", fields, version=stale, **HTMX),
    ):
        text = page_text(response)
        assert 'data-testid="change-conflict"' in text and "changed since you opened it" in text
        assert "changed by someone" in text
        assert f"version={stale + 1}" in text  # "Make the change again" starts from the current values
    assert not ChangeRequest.objects.exists()


def test_a_double_submitted_confirmation_makes_one_request(client, people):
    mailbox = _mailbox()
    signed_in(client, people["help"])
    preview = _preview(client, mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"})
    first = _confirm(client, mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"}, key=_key(preview), **HTMX)
    second = _confirm(client, mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"}, key=_key(preview), **HTMX)
    change = ChangeRequest.objects.get()
    assert f"Change request #{change.pk}" in page_text(first) and f"Change request #{change.pk}" in page_text(second)
    assert AuditEvent.objects.filter(action="soa.change.requested").count() == 1


def test_an_open_request_holds_further_edits_and_says_why(client, people):
    mailbox = _mailbox()
    signed_in(client, people["help"])
    _confirm(client, mailbox, "add_alias", {"address": f"ann.new@{DOMAIN}"})
    text = page_text(client.get(_url("mailbox_detail", mailbox)))
    assert "/edit/" not in text and 'data-testid="edit-blocked"' in text
    refused = _confirm(client, mailbox, "add_alias", {"address": f"ann.two@{DOMAIN}"}, key="form-2", **HTMX)
    assert "wait until it is finished, or cancel it" in page_text(refused)
    assert ChangeRequest.objects.count() == 1


# -- the Changes card ----------------------------------------------------------------------------------------------


def _request(people, mailbox, *operations, who="help", key="k-1"):
    return change_request_create(actor=people[who], mailbox_id=mailbox.pk, operations=list(operations),
                                 reason="ticket 4711", base_version=mailbox.version, idempotency_key=key)  # fmt: skip


def test_the_card_lists_requests_and_polls_only_while_one_is_open(client, people):
    mailbox = _mailbox()
    signed_in(client, people["auditor"])
    assert "every 2s" not in page_text(client.get(_url("mailbox_changes", mailbox), **HTMX))
    change = _request(people, mailbox, {"op": "add_alias", "address": f"ann.new@{DOMAIN}"})
    text = page_text(client.get(_url("mailbox_changes", mailbox), **HTMX))
    assert "every 2s" in text and f"watching={change.pk}" in text
    assert f"Add an address: smtp:ann.new@{DOMAIN}" in text and "ticket 4711" in text and "hugo" in text
    ChangeRequest.objects.filter(pk=change.pk).update(
        state=ChangeState.FAILED, error="Exchange Online refused the address: proxy address already exists.",
        results={"exchange": {"written": False, "note": "Exchange Online answered ProxyAddressExists."}},
    )  # fmt: skip
    response = client.get(_url("mailbox_changes", mailbox), {"watching": change.pk}, **HTMX)
    text = page_text(response)
    assert "every 2s" not in text
    assert "proxy address already exists" in text and "Exchange Online" in text and "ProxyAddressExists" in text
    assert response["HX-Trigger"] == "mailbox-updated"  # the attributes card refreshes its values
    for crafted in ("9" * 5000, "١٢", "-1", "1e3"):  # too long for an id, other scripts' digits, not a number
        response = client.get(_url("mailbox_changes", mailbox), {"watching": crafted}, **HTMX)
        assert response.status_code == 200 and "HX-Trigger" not in response


def test_an_approver_approves_a_pending_request_on_the_page(client, people):
    mailbox = _mailbox()
    change = _request(people, mailbox, {"op": "make_primary", "address": f"ann.old@{DOMAIN}"})
    signed_in(client, people["help"])
    text = page_text(client.get(_url("mailbox_detail", mailbox)))
    assert "Awaiting approval" in text and "/approve/" not in text  # help desk waits
    signed_in(client, people["approver"])
    text = page_text(client.get(_url("mailbox_detail", mailbox)))
    assert f"/changes/{change.pk}/approve/" in text and f"/changes/{change.pk}/reject/" in text
    assert f"ann.archer@{DOMAIN} → ann.old@{DOMAIN}" in text  # what is approved: the primary, before and after
    url = reverse("change_approve", args=[mailbox.pk, change.pk])
    step = page_text(client.get(url, **HTMX))
    assert 'data-testid="decision-form"' in step and "every 2s" not in step  # no poll wipes the form
    response = client.post(url, {"reason": "checked with the owner"}, **HTMX)
    assert response["HX-Trigger"] == "mailbox-updated"
    change.refresh_from_db()
    assert change.state == ChangeState.APPROVED and change.decided_by == people["approver"]
    assert last_event("soa.change.approved", change).reason == "checked with the owner"


def test_rejecting_needs_a_reason(client, people):
    mailbox = _mailbox()
    change = _request(people, mailbox, {"op": "make_primary", "address": f"ann.old@{DOMAIN}"})
    signed_in(client, people["approver"])
    url = reverse("change_reject", args=[mailbox.pk, change.pk])
    response = client.post(url, {"reason": ""}, **HTMX)
    assert "Give a reason for rejecting the change" in page_text(response)
    change.refresh_from_db()
    assert change.state == ChangeState.PENDING_APPROVAL
    client.post(url, {"reason": "the owner said no"}, **HTMX)
    change.refresh_from_db()
    assert change.state == ChangeState.REJECTED
    assert "the owner said no" in page_text(client.get(_url("mailbox_detail", mailbox)))


def test_the_requester_holding_the_approver_role_is_told_why_not(client, people, make_user):
    both = make_user("bea", Role.HELPDESK, Role.APPROVER)
    mailbox = _mailbox()
    people["both"] = both
    change = _request(people, mailbox, {"op": "make_primary", "address": f"ann.old@{DOMAIN}"}, who="both")
    text = page_text(signed_in(client, both).get(_url("mailbox_detail", mailbox)))
    assert "another approver must decide on it" in text and f"/changes/{change.pk}/approve/" not in text
    response = client.post(reverse("change_approve", args=[mailbox.pk, change.pk]), {}, **HTMX)
    assert "another approver must decide on it" in page_text(response)
    change.refresh_from_db()
    assert change.state == ChangeState.PENDING_APPROVAL


def test_help_desk_cancels_an_open_request_after_confirming(client, people):
    mailbox = _mailbox()
    change = _request(people, mailbox, {"op": "add_alias", "address": f"ann.new@{DOMAIN}"})
    signed_in(client, people["help"])
    url = reverse("change_cancel", args=[mailbox.pk, change.pk])
    assert url in page_text(client.get(_url("mailbox_detail", mailbox)))
    assert "Cancel change request #" in page_text(client.get(url))  # the confirmation, as a page without JS
    client.post(url, {})
    change.refresh_from_db()
    assert change.state == ChangeState.CANCELLED
    assert last_event("soa.change.cancelled", change).actor == people["help"]


def test_an_auditor_cannot_cancel_and_the_attempt_is_audited(client, people):
    mailbox = _mailbox()
    change = _request(people, mailbox, {"op": "add_alias", "address": f"ann.new@{DOMAIN}"})
    signed_in(client, people["auditor"])
    assert "/cancel/" not in page_text(client.get(_url("mailbox_detail", mailbox)))
    response = client.post(reverse("change_cancel", args=[mailbox.pk, change.pk]), {}, **HTMX)
    # Refused for the role before the view runs (portal.middleware.ReadOnlyAuditorMiddleware), and recorded.
    assert response.status_code == 403 and "auditor role reads everything" in page_text(response)
    change.refresh_from_db()
    assert change.state == ChangeState.VALIDATED
    denied = AuditEvent.objects.filter(action="portal.request.denied").latest("id")
    assert denied.actor == people["auditor"] and denied.object_id == reverse(
        "change_cancel", args=[mailbox.pk, change.pk]
    )
