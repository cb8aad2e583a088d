"""Bulk edits (soa.bulk_csv, soa.services.change_batches, writeback.jobs.change_batches' steps): per-line validation
with line numbers, scope without revealing what exists, bounded input, one batch for a confirmation sent twice, the
steps creating one request per line in file order per mailbox, pause, resume and cancel (audited), and the pages."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from portal.models import AuditEvent
from portal.roles import Role
from soa.bulk_csv import UNKNOWN, BulkInputError, bulk_preview, text_lines
from soa.choices import Authority, BatchState, ChangeOperation, ChangeState
from soa.models import ChangeBatch, ChangeBatchLine, ChangeRequest
from soa.services import SoaError
from soa.services.accepted_domains import accepted_domains_replace
from soa.services.change_batches import (
    BulkLinesError,
    batch_progress,
    change_batch_cancel,
    change_batch_claim,
    change_batch_create,
    change_batch_pause,
    change_batch_resume,
)
from soa.services.changes import change_request_cancel, change_request_create
from tests.soa.test_wave_support import DOMAIN, FINANCE, SALES, last_event, make_mailbox
from writeback.jobs.change_batches import BATCH, change_batch_job
from writeback.jobs.lifecycle import complete

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def accepted_domains():
    with transaction.atomic():
        accepted_domains_replace(
            domains=[{"DomainName": DOMAIN, "DomainType": "Authoritative", "Default": True}], fetched_at=timezone.now()
        )


@pytest.fixture
def people(make_user):
    return {
        "help": make_user("hugo", Role.HELPDESK),
        "sales_help": make_user("sid", Role.HELPDESK, scopes=(SALES,)),
        "admin": make_user("ada", Role.ADMIN),
        "other": make_user("olga", Role.HELPDESK),
        "sales_operator": make_user("otto", Role.WAVE_OPERATOR, scopes=(SALES,)),
    }


@pytest.fixture
def mailboxes():
    return {
        "ann": make_mailbox("Ann Archer", authority=Authority.CLOUD),
        "bob": make_mailbox("Bob Baker", authority=Authority.CLOUD, aliases=(f"bob.b@{DOMAIN}",)),
        "fay": make_mailbox("Fay Fisher", FINANCE, authority=Authority.CLOUD),
    }


def lines(text: str) -> list[str]:
    return text.strip().splitlines()


def problems(preview) -> dict[int, str]:
    return {problem.line: problem.reason for problem in preview.problems}


def test_every_bad_line_is_reported_with_its_number_and_good_lines_are_checked_on_the_lines_before(people, mailboxes):
    text = f"""
mailbox,operation,attribute,value
ann.archer@{DOMAIN},add-alias,,ann.a@{DOMAIN}
ann.archer@{DOMAIN},make-primary,,ann.a@{DOMAIN}
nobody@{DOMAIN},add-alias,,x@{DOMAIN}
bob.baker@{DOMAIN},add-alias,,bob@elsewhere.example
bob.baker@{DOMAIN},set,CustomAttribute3,Sales
bob.baker@{DOMAIN},set,CustomAttribute3,Sales
bob.baker@{DOMAIN},set,CustomAttribute3,Marketing
bob.baker@{DOMAIN},frobnicate,,x
bob.baker@{DOMAIN},set,CustomAttribute4,{"x" * 1025}
bob.baker@{DOMAIN},hide,,
bob.baker@{DOMAIN},show,,
ann.archer@{DOMAIN},add-alias,,shared@{DOMAIN}
bob.baker@{DOMAIN},add-alias,,shared@{DOMAIN}
bob.baker@{DOMAIN},remove-value,ExtensionCustomAttribute2,absent
"""
    preview = bulk_preview(user=people["help"], lines=lines(text))
    found = problems(preview)
    assert set(found) == {4, 5, 7, 8, 9, 10, 12, 14, 15}
    assert found[4] == UNKNOWN
    assert "elsewhere.example" in found[5]
    assert found[7] == "duplicate: the same edit as line 6 for this mailbox"
    assert found[8] == "conflicts with line 6 for this mailbox"
    assert "unknown operation 'frobnicate'" in found[9]
    assert "at most 1,024 characters" in found[10]
    assert found[12] == "conflicts with line 11 for this mailbox"
    assert found[14] == "line 13 gives this address to another mailbox"
    assert "absent" in found[15] or "not" in found[15]
    # Line 3 makes primary the address line 2 adds: checked on the values line 2 leaves, so it is good.
    assert [line.number for line in preview.lines] == [2, 3, 6, 11, 13]
    assert not preview.ok


def test_a_mailbox_outside_the_scope_reads_exactly_as_an_unknown_one(people, mailboxes):
    text = f"fay.fisher@{DOMAIN},hide\nnobody@{DOMAIN},hide\nann.archer@{DOMAIN},hide"
    preview = bulk_preview(user=people["sales_help"], lines=lines(text))
    assert problems(preview) == {1: UNKNOWN, 2: UNKNOWN}
    assert [line.mailbox_id for line in preview.lines] == [mailboxes["ann"].pk]
    with pytest.raises(BulkLinesError):
        change_batch_create(actor=people["sales_help"], lines=lines(text), file_name="x.csv", reason="t",
                            idempotency_key="k-scope")  # fmt: skip
    assert not ChangeBatch.objects.exists()


def test_too_many_lines_or_too_many_bytes_are_refused_with_a_clear_message_and_nothing_is_created(
    people, mailboxes, settings
):
    settings.BULK_CHANGE_MAX_LINES = 3
    text = "\n".join(f"ann.archer@{DOMAIN},set,CustomAttribute{i},v" for i in range(1, 5))
    with pytest.raises(BulkInputError, match="more than 3 lines"):
        change_batch_create(actor=people["help"], lines=lines(text), file_name="x.csv", reason="t",
                            idempotency_key="k-lines")  # fmt: skip
    settings.BULK_CHANGE_MAX_BYTES = 64
    upload = SimpleUploadedFile("big.csv", ("x" * 65).encode())
    with pytest.raises(BulkInputError, match="larger than"):
        list(text_lines(upload))
    upload.size = 10  # a client that lies about the size is still stopped by what is read
    with pytest.raises(BulkInputError, match="larger than"):
        list(text_lines(upload))
    assert not ChangeBatch.objects.exists() and not ChangeRequest.objects.exists()


def test_an_oversized_upload_is_refused_on_the_page(client, people, mailboxes, settings):
    settings.BULK_CHANGE_MAX_BYTES = 1024
    client.force_login(people["help"])
    upload = SimpleUploadedFile("big.csv", f"ann.archer@{DOMAIN},hide\n".encode() * 200)
    response = client.post(reverse("bulk_preview"), {"file": upload})
    assert response.status_code == 200
    assert "larger than 1 KB" in response.content.decode()
    assert not ChangeBatch.objects.exists()


def create(people, text, key="k1", reason="ticket 4711", actor="help"):
    return change_batch_create(actor=people[actor], lines=lines(text), file_name="edits.csv", reason=reason,
                               idempotency_key=key)  # fmt: skip


def test_a_confirmation_sent_twice_makes_one_batch_and_a_reason_is_required(people, mailboxes):
    text = f"ann.archer@{DOMAIN},hide\nbob.baker@{DOMAIN},set,CustomAttribute2,x"
    with pytest.raises(SoaError, match="reason"):
        create(people, text, reason=" ")
    first = create(people, text)
    again = create(people, text)
    assert first.pk == again.pk and ChangeBatch.objects.count() == 1
    assert first.state == BatchState.QUEUED and first.line_count == 2
    assert list(first.lines.values_list("number", flat=True)) == [1, 2]
    event = last_event("soa.batch.created", first)
    assert event.actor == people["help"] and event.after["mailboxes"] == 2


def test_a_step_creates_one_request_per_line_and_a_mailboxs_lines_wait_their_turn(people, mailboxes):
    text = f"""
ann.archer@{DOMAIN},add-alias,ann.a@{DOMAIN}
ann.archer@{DOMAIN},set,CustomAttribute1,after-alias
bob.baker@{DOMAIN},hide
"""
    batch = create(people, text)
    change_batch_job(batch.pk)
    batch.refresh_from_db()
    assert batch.state == BatchState.RUNNING
    made = {line.number: line.request for line in batch.lines.select_related("request")}
    assert made[2] is None, "the second line of ann waits for the first"
    assert made[1].state == ChangeState.VALIDATED and made[3].state == ChangeState.VALIDATED
    event = last_event("soa.change.requested", made[1])
    assert event.after["batch"] == batch.pk and event.reason == "ticket 4711" and event.actor == people["help"]
    # The first request of ann ends (here cancelled); the next step makes the second on the values now.
    change_request_cancel(actor=people["help"], request_id=made[1].pk)
    change_request_cancel(actor=people["help"], request_id=made[3].pk)
    change_batch_job(batch.pk)
    second = ChangeBatchLine.objects.get(batch=batch, number=2).request
    assert second is not None and second.operations[0]["value"] == "after-alias"
    assert batch_progress(batch).created == 3
    change_request_cancel(actor=people["help"], request_id=second.pk)
    change_batch_job(batch.pk)
    batch.refresh_from_db()
    assert batch.state == BatchState.DONE and batch_progress(batch).failed == 3
    assert last_event("soa.batch.done", batch)


def test_paused_batches_make_no_request_until_resumed_and_only_the_owner_or_an_admin_controls_them(people, mailboxes):
    batch = create(people, f"ann.archer@{DOMAIN},hide\nbob.baker@{DOMAIN},hide")
    with pytest.raises(SoaError, match="Only the person"):
        change_batch_pause(actor=people["other"], batch_id=batch.pk)
    change_batch_pause(actor=people["help"], batch_id=batch.pk, reason="wrong day")
    change_batch_job(batch.pk)
    assert not ChangeRequest.objects.exists()
    assert last_event("soa.batch.paused", batch).reason == "wrong day"
    change_batch_resume(actor=people["admin"], batch_id=batch.pk)
    assert last_event("soa.batch.resumed", batch).actor == people["admin"]
    change_batch_job(batch.pk)
    assert ChangeRequest.objects.count() == 2
    change_batch_cancel(actor=people["help"], batch_id=batch.pk)
    batch.refresh_from_db()
    assert batch.state == BatchState.CANCELLED and batch.finished_at
    with pytest.raises(SoaError, match="cancelled"):
        change_batch_resume(actor=people["help"], batch_id=batch.pk)


def test_a_pause_stops_a_step_already_running_at_its_next_line(people, mailboxes, settings):
    settings.BULK_CHANGE_STEP = 1  # one line per step
    batch = create(people, f"ann.archer@{DOMAIN},hide\nbob.baker@{DOMAIN},hide")
    change_batch_job(batch.pk)
    assert ChangeRequest.objects.count() == 1
    claimed = change_batch_claim(batch_id=batch.pk)  # a step has started...
    change_batch_pause(actor=people["help"], batch_id=batch.pk)  # ...when its owner pauses the batch
    assert complete(BATCH, claimed) is None
    assert ChangeRequest.objects.count() == 1
    change_batch_resume(actor=people["help"], batch_id=batch.pk)
    change_batch_job(batch.pk)
    assert ChangeRequest.objects.count() == 2


def test_a_line_the_service_refuses_at_its_turn_keeps_the_message_and_the_batch_goes_on(people, mailboxes):
    batch = create(people, f"ann.archer@{DOMAIN},add-alias,late@{DOMAIN}\nbob.baker@{DOMAIN},hide")
    bob = mailboxes["bob"]
    # Since the preview, another mailbox took the address.
    from soa.services.changes import change_request_create

    change_request_create(actor=people["other"], mailbox_id=bob.pk, operations=[{"op": "add_alias",
                          "address": f"late@{DOMAIN}"}], reason="x", base_version=bob.version,
                          idempotency_key="other-1")  # fmt: skip
    change_batch_job(batch.pk)
    first = ChangeBatchLine.objects.get(batch=batch, number=1)
    assert first.request is None and "already used" in first.error
    assert ChangeBatchLine.objects.get(batch=batch, number=2).request is None  # bob has an open request: waits


def test_the_pages_walk_from_upload_through_preview_to_the_batch(client, people, mailboxes):
    client.force_login(people["help"])
    assert client.get(reverse("bulk_upload")).status_code == 200
    bad = SimpleUploadedFile("bad.csv", f"nobody@{DOMAIN},hide\nann.archer@{DOMAIN},hide\n".encode())
    page = client.post(reverse("bulk_preview"), {"file": bad}).content.decode()
    assert UNKNOWN in page and 'data-testid="bulk-confirm"' not in page
    good = SimpleUploadedFile("good.csv", f"ann.archer@{DOMAIN},hide\n".encode())
    response = client.post(reverse("bulk_preview"), {"file": good})
    confirm = response.context["confirm"]
    data = {**confirm.initial, "reason": "ticket 9"}
    first = client.post(reverse("bulk_confirm"), data)
    second = client.post(reverse("bulk_confirm"), data)
    batch = ChangeBatch.objects.get()
    assert first.url == second.url == reverse("bulk_detail", args=[batch.pk])
    detail = client.get(reverse("bulk_detail", args=[batch.pk]), headers={"HX-Request": "true"})
    assert 'id="batch-progress"' in detail.content.decode() and "<html" not in detail.content.decode()
    client.force_login(people["other"])
    assert client.get(reverse("bulk_detail", args=[batch.pk])).status_code == 404
    assert AuditEvent.objects.filter(action="soa.batch.created").count() == 1


def test_an_admin_sees_every_batch_and_pauses_one_from_its_page_but_cannot_upload(client, people, mailboxes):
    batch = create(people, f"ann.archer@{DOMAIN},hide")
    client.force_login(people["admin"])
    listing = client.get(reverse("bulk_upload")).content.decode()
    assert reverse("bulk_detail", args=[batch.pk]) in listing and 'data-testid="bulk-preview"' not in listing
    assert client.get(reverse("bulk_detail", args=[batch.pk])).status_code == 200
    client.post(reverse("bulk_pause", args=[batch.pk]))
    batch.refresh_from_db()
    assert batch.state == BatchState.PAUSED and last_event("soa.batch.paused", batch).actor == people["admin"]
    upload = SimpleUploadedFile("x.csv", f"ann.archer@{DOMAIN},hide".encode())
    assert client.post(reverse("bulk_preview"), {"file": upload}).status_code == 403


def test_a_confirmation_crafted_with_too_many_lines_is_refused_without_an_error_page(client, people, settings):
    settings.BULK_CHANGE_MAX_LINES = 2
    client.force_login(people["help"])
    text = "\n".join(f"ann.archer@{DOMAIN},set,CustomAttribute{i},v" for i in range(1, 5))
    response = client.post(reverse("bulk_confirm"), {"text": text, "idempotency_key": "k", "reason": ""})
    assert response.status_code == 200 and "more than 2 lines" in response.content.decode()
    assert not ChangeBatch.objects.exists()


def test_an_operator_edits_mailboxes_of_its_ous_in_bulk_but_not_one_by_one_on_the_mailbox_page(
    client, people, mailboxes
):
    text = f"ann.archer@{DOMAIN},set,CustomAttribute5,wave-3\nfay.fisher@{DOMAIN},set,CustomAttribute5,wave-3"
    preview = bulk_preview(user=people["sales_operator"], lines=lines(text))
    assert problems(preview) == {2: UNKNOWN}  # Finance is outside the operator's OUs: it reads as unknown
    batch = create(people, f"ann.archer@{DOMAIN},set,CustomAttribute5,wave-3", actor="sales_operator")
    change_batch_job(batch.pk)
    (line,) = batch.lines.select_related("request")
    assert line.request is not None and line.request.requested_by == people["sales_operator"]
    assert last_event("soa.change.requested", line.request).actor == people["sales_operator"]
    change_request_cancel(actor=people["sales_operator"], request_id=line.request.pk)  # its own line's request

    client.force_login(people["sales_operator"])
    assert client.get(reverse("bulk_upload")).status_code == 200
    ann = mailboxes["ann"]
    # The operator sees Ann's mailbox, so the refusal gives its reason (403) rather than pretending it is missing.
    refused = client.get(reverse("change_edit", args=[ann.pk, ChangeOperation.SET_CUSTOM_ATTRIBUTE]))
    assert refused.status_code == 403 and "your roles do not allow editing mailboxes" in refused.content.decode()
    with pytest.raises(SoaError):
        change_request_create(
            actor=people["sales_operator"], mailbox_id=ann.pk, operations=[{"op": "hide"}], reason="x",
            base_version=ann.version, idempotency_key="operator-single",
        )  # fmt: skip
