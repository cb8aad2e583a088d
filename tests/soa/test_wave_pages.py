"""Pilot-wave pages: who sees what, each POST through its service, refusals shown to the user."""

import pytest
from django.urls import reverse

from portal.roles import Role
from soa.choices import Decision, WaveDirection, WaveState
from soa.models import Approval, PilotWave
from tests.soa.test_wave_support import (
    FINANCE,
    last_event,
    make_mailbox,
    new_wave,
    page_cast,
    page_text,
    signed_in,
    submitted_wave,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return page_cast(make_user)


# -- list and create -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["op", "approver", "auditor", "admin"])
def test_wave_list_renders_for_wave_readers(client, people, who):
    new_wave(people["op"], name="Sales pilot")
    response = signed_in(client, people[who]).get(reverse("wave_list"))
    assert response.status_code == 200
    assert "Sales pilot" in page_text(response)
    assert ("New wave" in page_text(response)) == (who == "op")


def test_wave_pages_are_forbidden_to_helpdesk(client, people):
    wave = new_wave(people["op"])
    signed_in(client, people["helpdesk"])
    assert client.get(reverse("wave_list")).status_code == 403
    assert client.get(reverse("wave_detail", args=[wave.pk])).status_code == 403
    assert client.post(reverse("wave_approve", args=[wave.pk])).status_code == 403


def test_wave_list_filters_by_state_and_shows_an_empty_state(client, people):
    new_wave(people["op"], name="Draft one")
    signed_in(client, people["op"])
    assert "Draft one" in page_text(client.get(reverse("wave_list"), {"state": WaveState.DRAFT}))
    response = client.get(reverse("wave_list"), {"state": WaveState.APPROVED}, HTTP_HX_REQUEST="true")
    assert "Draft one" not in page_text(response) and "No wave matches this filter" in page_text(response)
    assert "<html" not in page_text(response)  # the partial only


def test_empty_wave_list(client, people):
    assert "No pilot wave yet" in page_text(signed_in(client, people["op"]).get(reverse("wave_list")))


def test_operator_creates_a_wave(client, people):
    signed_in(client, people["op"])
    assert client.get(reverse("wave_create")).status_code == 200
    response = client.post(
        reverse("wave_create"),
        {"name": "Sales pilot", "direction": WaveDirection.TO_CLOUD, "required_approvals": 2, "batch_size": 20,
         "max_rate": 2.5, "window_start": "", "window_end": ""},
    )  # fmt: skip
    wave = PilotWave.objects.get(name="Sales pilot")
    assert response.status_code == 302 and response["Location"] == reverse("wave_detail", args=[wave.pk])
    assert (wave.required_approvals, wave.batch_size, wave.max_rate, wave.created_by) == (2, 20, 2.5, people["op"])
    assert last_event("soa.wave.created", wave).actor == people["op"]


def test_create_shows_the_services_refusal(client, people):
    new_wave(people["op"], name="Sales pilot")
    response = signed_in(client, people["op"]).post(
        reverse("wave_create"),
        {"name": "sales PILOT", "direction": WaveDirection.TO_CLOUD, "required_approvals": 1, "batch_size": 50,
         "max_rate": 5},
    )  # fmt: skip
    assert response.status_code == 400
    assert "An open wave is already called" in page_text(response)
    assert PilotWave.objects.count() == 1


def test_create_with_a_window_in_the_past_is_refused(client, people):
    response = signed_in(client, people["op"]).post(
        reverse("wave_create"),
        {"name": "Late", "direction": WaveDirection.TO_CLOUD, "required_approvals": 1, "batch_size": 50,
         "max_rate": 5, "window_start": "2020-01-01T08:00", "window_end": "2020-01-01T18:00"},
    )  # fmt: skip
    assert response.status_code == 400 and "ends in the past" in page_text(response)
    assert not PilotWave.objects.exists()


def test_approver_cannot_open_the_create_form(client, people):
    assert signed_in(client, people["approver"]).get(reverse("wave_create")).status_code == 403


# -- detail ----------------------------------------------------------------------------------------------------


def test_missing_wave_is_404(client, people):
    assert signed_in(client, people["op"]).get(reverse("wave_detail", args=[999])).status_code == 404
    assert client.post(reverse("wave_submit", args=[999])).status_code == 404


@pytest.mark.parametrize("who", ["op", "approver", "auditor", "admin"])
def test_detail_renders_for_wave_readers(client, people, who):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    response = signed_in(client, people[who]).get(reverse("wave_detail", args=[wave.pk]))
    assert response.status_code == 200
    assert "ann.archer@corp.example.com" in page_text(response)
    assert ("Add members" in page_text(response)) == (who == "op")
    assert ("Submit for approval" in page_text(response)) == (who == "op")


def test_member_search_partial_offers_checkboxes(client, people):
    wave = new_wave(people["op"])
    ann = make_mailbox("Ann Archer")
    make_mailbox("Bob Baker")
    response = signed_in(client, people["op"]).get(
        reverse("wave_detail", args=[wave.pk]), {"q": "ann"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and "<html" not in page_text(response)
    assert f'name="mailbox" value="{ann.pk}"' in page_text(response) and "Bob Baker" not in page_text(response)


def test_add_picked_members_and_remove_them(client, people):
    wave = new_wave(people["op"])
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    signed_in(client, people["op"])
    response = client.post(reverse("wave_add_members", args=[wave.pk]), {"mailbox": [ann.pk, bob.pk]}, follow=True)
    assert "Added 2 mailboxes" in page_text(response)
    assert set(wave.members.values_list("mailbox_id", flat=True)) == {ann.pk, bob.pk}
    response = client.post(reverse("wave_remove_members", args=[wave.pk]), {"mailbox": [bob.pk]}, follow=True)
    assert "Removed 1 member" in page_text(response)
    assert list(wave.members.values_list("mailbox_id", flat=True)) == [ann.pk]
    assert last_event("soa.wave.members_removed", wave).actor == people["op"]


def test_add_refusal_is_shown(client, people):
    wave = new_wave(people["sales_op"])
    finn = make_mailbox("Finn Fisher", FINANCE)
    url = reverse("wave_add_members", args=[wave.pk])
    response = signed_in(client, people["sales_op"]).post(url, {"mailbox": [finn.pk]})
    assert response.status_code == 403
    assert "outside your wave-building scope" in page_text(response)
    assert not wave.members.exists()


def test_add_by_filter(client, people):
    wave = new_wave(people["op"])
    ann = make_mailbox("Ann Archer")
    make_mailbox("Finn Fisher", FINANCE)
    signed_in(client, people["op"])
    chosen = {"filter-ou": ann.ou_norm, "filter-authority": "source"}
    asked = client.post(reverse("wave_add_by_filter", args=[wave.pk]), chosen)
    # First the count, and nothing added until it is confirmed.
    assert asked.status_code == 200 and asked.context["filter_preview"].new == 1 and not wave.members.exists()
    assert "would be added" in page_text(asked) and 'name="confirmed" value="1"' in page_text(asked)
    response = client.post(reverse("wave_add_by_filter", args=[wave.pk]), {**chosen, "confirmed": "1"})
    assert response.status_code == 302
    assert list(wave.members.values_list("mailbox_id", flat=True)) == [ann.pk]
    again = client.post(reverse("wave_add_by_filter", args=[wave.pk]), chosen)
    assert again.context["filter_preview"].new == 0 and "nothing would be added" in page_text(again)
    response = client.post(reverse("wave_add_by_filter", args=[wave.pk]), {"filter-authority": "source"})
    assert response.status_code == 400 and "Choose at least one filter" in page_text(response)


def test_csv_errors_are_listed_with_line_numbers(client, people):
    wave = new_wave(people["op"])
    make_mailbox("Ann Archer")
    text = "ann.archer@corp.example.com\nnobody@corp.example.com\nann.archer@corp.example.com\n"
    response = signed_in(client, people["op"]).post(reverse("wave_add_from_csv", args=[wave.pk]), {"text": text})
    assert response.status_code == 400
    body = page_text(response)
    assert "<td>2</td><td>nobody@corp.example.com</td><td>unknown" in body
    assert "<td>3</td>" in body and "duplicate: the same mailbox as line 1" in body
    assert not wave.members.exists()


def test_csv_upload_adds_members(client, people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    wave = new_wave(people["op"])
    ann = make_mailbox("Ann Archer")
    upload = SimpleUploadedFile("list.csv", b"upn\nann.archer@corp.example.com\n", content_type="text/csv")
    response = signed_in(client, people["op"]).post(reverse("wave_add_from_csv", args=[wave.pk]), {"file": upload})
    assert response.status_code == 302
    assert list(wave.members.values_list("mailbox_id", flat=True)) == [ann.pk]


def test_preflight_shows_member_findings(client, people):
    ann = make_mailbox("Ann Archer")
    cid = make_mailbox("Cid Cole", recipient_type_details="MailUser")
    wave = new_wave(people["op"], ann, cid)
    response = signed_in(client, people["op"]).get(reverse("wave_preflight", args=[wave.pk]), HTTP_HX_REQUEST="true")
    body = page_text(response)
    assert response.status_code == 200 and "<html" not in body
    assert "2 members: 1 to move, 1 excluded" in body and "UNSUPPORTED_RECIPIENT_TYPE" in body
    wave.refresh_from_db()
    assert wave.preflight_report == {}  # reads only


# -- submit, withdraw, cancel --------------------------------------------------------------------------------


def test_submit_has_a_confirmation_step(client, people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    signed_in(client, people["op"])
    response = client.get(reverse("wave_submit", args=[wave.pk]))
    assert response.status_code == 200 and "1 to move" in page_text(response)
    wave.refresh_from_db()
    assert wave.state == WaveState.DRAFT
    response = client.post(reverse("wave_submit", args=[wave.pk]), follow=True)
    wave.refresh_from_db()
    assert wave.state == WaveState.SUBMITTED and "is submitted for approval" in page_text(response)
    assert "frozen at submission" in page_text(response)


def test_submit_refusal_is_shown(client, people):
    wave = new_wave(people["op"])
    response = signed_in(client, people["op"]).post(reverse("wave_submit", args=[wave.pk]))
    assert response.status_code == 409 and "has no members" in page_text(response)


def test_submit_is_forbidden_to_approvers(client, people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    assert signed_in(client, people["approver"]).post(reverse("wave_submit", args=[wave.pk])).status_code == 403


def test_withdraw_back_to_draft(client, people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    signed_in(client, people["op"])
    assert client.get(reverse("wave_withdraw", args=[wave.pk])).status_code == 200
    client.post(reverse("wave_withdraw", args=[wave.pk]), {"reason": "one more mailbox"})
    wave.refresh_from_db()
    assert wave.state == WaveState.DRAFT
    assert last_event("soa.wave.withdrawn", wave).reason == "one more mailbox"


def test_cancel_needs_a_reason(client, people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    signed_in(client, people["op"])
    response = client.post(reverse("wave_cancel", args=[wave.pk]), {"reason": ""})
    assert response.status_code == 200 and "This field is required" in page_text(response)
    client.post(reverse("wave_cancel", args=[wave.pk]), {"reason": "wrong OU"})
    wave.refresh_from_db()
    assert wave.state == WaveState.CANCELLED


def test_approver_cancel_is_refused_by_the_service(client, people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    response = signed_in(client, people["approver"]).post(reverse("wave_cancel", args=[wave.pk]), {"reason": "no"})
    assert response.status_code == 403 and "do not allow cancelling" in page_text(response)
    wave.refresh_from_db()
    assert wave.state == WaveState.DRAFT


# -- decisions -------------------------------------------------------------------------------------------------


def test_approver_sees_the_form_and_approves(client, people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    signed_in(client, people["approver"])
    assert 'data-testid="approve-form"' in page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    response = client.post(reverse("wave_approve", args=[wave.pk]), {"reason": "fine"}, follow=True)
    wave.refresh_from_db()
    assert wave.state == WaveState.APPROVED and "Approved" in page_text(response)
    assert Approval.objects.get(wave=wave).reason == "fine"


def test_submitter_sees_no_form_and_a_forged_post_is_refused(client, people, make_user):
    both = make_user("bea", Role.WAVE_OPERATOR, Role.APPROVER)
    wave = submitted_wave(both, make_mailbox("Ann Archer"))
    signed_in(client, both)
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert 'data-testid="approve-form"' not in page and 'data-testid="reject-form"' not in page
    assert "You submitted this wave" in page
    response = client.post(reverse("wave_approve", args=[wave.pk]), {"reason": "mine"})
    assert response.status_code == 403 and "You submitted this wave" in page_text(response)
    wave.refresh_from_db()
    assert wave.state == WaveState.SUBMITTED and not Approval.objects.exists()


def test_warnings_must_be_acknowledged(client, people):
    ann = make_mailbox("Ann Archer", ad_values={"CustomAttribute1": "old"})
    wave = submitted_wave(people["op"], ann)
    assert wave.warnings_to_acknowledge
    signed_in(client, people["approver"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert "I have read the pre-flight warnings" in page
    assert "CustomAttribute1: AD “old” · EXO “staff”" in page  # the difference the flip makes authoritative
    response = client.post(reverse("wave_approve", args=[wave.pk]), {})
    assert response.status_code == 400 and "acknowledge them to approve" in page_text(response)
    client.post(reverse("wave_approve", args=[wave.pk]), {"acknowledge_warnings": "on"})
    wave.refresh_from_db()
    assert wave.state == WaveState.APPROVED


def test_reject_needs_a_reason(client, people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    signed_in(client, people["approver"])
    response = client.post(reverse("wave_reject", args=[wave.pk]), {"reason": " "})
    assert response.status_code == 200 and "This field is required" in page_text(response)
    client.post(reverse("wave_reject", args=[wave.pk]), {"reason": "too early"})
    wave.refresh_from_db()
    assert wave.state == WaveState.REJECTED
    approval = Approval.objects.get(wave=wave)
    assert (approval.decision, approval.reason) == (Decision.REJECT, "too early")


def test_operator_forged_reject_is_refused(client, people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    response = signed_in(client, people["op2"]).post(reverse("wave_reject", args=[wave.pk]), {"reason": "x"})
    assert response.status_code == 403 and "do not allow approving" in page_text(response)
