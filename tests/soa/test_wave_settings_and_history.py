"""No dead ends in waves: a draft's settings change on their own page; any wave (a rejected one above all) is copied
into a new draft; every member's result exports as CSV; the wave page tells the wave's history."""

import csv
import io

import pytest
from django.urls import reverse

from portal.models import AuditEvent
from soa.choices import WaveState
from soa.models import PilotWave
from soa.services.approvals import wave_reject
from soa.services.wave_clone import wave_clone
from soa.services.waves import wave_submit, wave_update
from tests.soa.test_wave_support import FINANCE, make_mailbox, new_wave, page_cast, page_text, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return page_cast(make_user)


def _rejected(people) -> PilotWave:
    wave = new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE), name="Q3 pilot",
                    required_approvals=2, batch_size=20, max_rate=2.5, description="finance and sales")  # fmt: skip
    wave_submit(actor=people["op"], wave_id=wave.pk)
    return wave_reject(actor=people["approver"], wave_id=wave.pk, reason="too early in the quarter")


def test_a_drafts_settings_change_on_their_page_and_are_recorded(client, people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"), name="Draft one", batch_size=50)
    client = signed_in(client, people["op"])
    page = client.get(reverse("wave_edit", args=[wave.pk]))
    assert (
        page.status_code == 200
        and 'value="Draft one"' in page_text(page)
        and "direction" not in page.context["form"].fields
    )
    response = client.post(reverse("wave_edit", args=[wave.pk]), {
        "name": "Draft one", "description": "now with a plan", "required_approvals": 2, "batch_size": 10,
        "max_rate": 5.0, "window_start": "", "window_end": "",
    })  # fmt: skip
    assert response.status_code == 302
    wave.refresh_from_db()
    assert (wave.description, wave.required_approvals, wave.batch_size) == ("now with a plan", 2, 10)
    event = AuditEvent.objects.filter(action="soa.wave.updated", object_id=str(wave.pk)).get()
    assert event.before["batch_size"] == 50 and event.after["batch_size"] == 10


def test_settings_past_the_draft_or_without_the_role_are_refused(client, people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    wave_submit(actor=people["op"], wave_id=wave.pk)
    response = signed_in(client, people["op"]).get(reverse("wave_edit", args=[wave.pk]))
    assert response.status_code == 409 and "only a draft can be changed" in page_text(response)
    assert signed_in(client, people["approver"]).get(reverse("wave_edit", args=[wave.pk])).status_code == 403


def test_a_rejected_wave_is_copied_into_a_new_draft_with_its_settings_and_members(client, people):
    rejected = _rejected(people)
    response = signed_in(client, people["op"]).post(reverse("wave_clone", args=[rejected.pk]))
    copy = PilotWave.objects.exclude(pk=rejected.pk).get(name="Q3 pilot (copy)")
    assert response.status_code == 302 and response.url == reverse("wave_detail", args=[copy.pk])
    assert copy.state == WaveState.DRAFT and copy.created_by == people["op"]
    assert (copy.direction, copy.required_approvals, copy.batch_size, copy.max_rate, copy.description) == (
        rejected.direction,
        2,
        20,
        2.5,
        "finance and sales",
    )
    assert sorted(copy.members.values_list("mailbox__display_name", flat=True)) == ["Ann Archer", "Finn Fisher"]
    rejected.refresh_from_db()
    assert rejected.state == WaveState.REJECTED  # the original and its decision stay as they were
    event = AuditEvent.objects.get(action="soa.wave.cloned")
    assert event.object_id == str(copy.pk) and event.after["from_wave"] == rejected.pk and event.after["left_out"] == 0
    # The same request again soon (a double click, a second tab) is the same copy; once the copy changed, a new one.
    assert wave_clone(actor=people["op"], wave_id=rejected.pk).wave == copy
    assert AuditEvent.objects.filter(action="soa.wave.cloned").count() == 1
    wave_update(actor=people["op"], wave_id=copy.pk, description="revised")
    assert wave_clone(actor=people["op"], wave_id=rejected.pk).wave.name == "Q3 pilot (copy 2)"


def test_a_copy_leaves_out_the_members_outside_the_copiers_scope_and_says_so(client, people):
    rejected = _rejected(people)
    response = signed_in(client, people["sales_op"]).post(reverse("wave_clone", args=[rejected.pk]), follow=True)
    copy = PilotWave.objects.get(name="Q3 pilot (copy)")
    assert list(copy.members.values_list("mailbox__display_name", flat=True)) == ["Ann Archer"]
    assert "1 outside your scope was left out" in page_text(response)


def test_only_a_wave_builder_may_copy_a_wave(client, people):
    rejected = _rejected(people)
    assert signed_in(client, people["approver"]).post(reverse("wave_clone", args=[rejected.pk])).status_code == 403
    assert PilotWave.objects.count() == 1


def test_every_members_result_exports_as_csv_and_the_export_is_recorded(client, people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("=Formula Fan"))
    response = signed_in(client, people["auditor"]).get(reverse("wave_results_export", args=[wave.pk]))
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["upn", "display_name", "primary_smtp", "state"]
    assert sorted(row[1] for row in rows[1:]) == ["'=Formula Fan", "Ann Archer"]
    assert {row[3] for row in rows[1:]} == {"PENDING"}
    assert AuditEvent.objects.filter(action="soa.wave.exported", object_id=str(wave.pk)).count() == 1


def test_the_wave_page_tells_its_history_with_the_reasons(client, people):
    rejected = _rejected(people)
    page = page_text(signed_in(client, people["auditor"]).get(reverse("wave_detail", args=[rejected.pk])))
    history = page.split('data-testid="wave-history"')[1]
    for label in ("Created", "Members added", "Submitted for approval", "Rejected"):
        assert label in history
    assert history.index("Created") < history.index("Submitted for approval") < history.index("Rejected")
    assert "too early in the quarter" in history and "batch_claimed" not in history


def test_the_page_offers_settings_copy_and_export_to_whom_they_apply(client, people):
    draft = new_wave(people["op"], make_mailbox("Ann Archer"))
    mine = page_text(signed_in(client, people["op"]).get(reverse("wave_detail", args=[draft.pk])))
    assert 'data-testid="edit-settings"' in mine and 'data-testid="clone-form"' in mine
    assert 'data-testid="export-results"' in mine
    theirs = page_text(signed_in(client, people["auditor"]).get(reverse("wave_detail", args=[draft.pk])))
    assert 'data-testid="edit-settings"' not in theirs and 'data-testid="clone-form"' not in theirs


def test_the_members_table_follows_a_running_wave(client, people):
    from soa.choices import MemberState
    from tests.soa.test_wave_support import started_wave

    wave = started_wave(people, [make_mailbox("Ann Archer"), make_mailbox("Bob Baker")])
    client = signed_in(client, people["auditor"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert f'hx-get="{reverse("wave_members", args=[wave.pk])}"' in page  # polled while the wave runs
    wave.members.filter(mailbox__display_name="Ann Archer").update(state=MemberState.DONE)
    partial = client.get(reverse("wave_members", args=[wave.pk]), headers={"HX-Request": "true"})
    assert partial.status_code == 200 and page_text(partial).lstrip().startswith(
        '<section class="card" id="wave-members"'
    )
    assert "Done" in page_text(partial)
    assert client.get(reverse("wave_members", args=[wave.pk])).status_code == 302  # a browser gets the page
    draft = new_wave(people["op"], make_mailbox("Cid Cole"), name="Not running")
    assert (
        'hx-get="/waves/'
        not in page_text(client.get(reverse("wave_detail", args=[draft.pk]))).split('id="wave-members"')[1][:10]
    )
