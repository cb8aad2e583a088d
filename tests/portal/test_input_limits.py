"""Free text has a maximum length everywhere it is taken (forms and services: waves, decisions, role grants, drift
repairs, writeback retries, bulk batches), and page cursors are read strictly (portal.cursors)."""

import base64
import datetime as dt

import pytest
from django.urls import reverse

from portal.cursors import BadCursor, decode_cursor, encode_cursor
from portal.limits import DESCRIPTION_MAX_LENGTH, REASON_MAX_LENGTH, SCOPES_MAX_LENGTH
from portal.models import AuditEvent, RoleAssignment
from portal.roles import Role
from portal.services import PortalError, role_assign, role_revoke
from soa.choices import BatchState, WaveDirection
from soa.forms_waves import ApproveForm, ReasonForm, RequiredReasonForm, WaveCreateForm
from soa.models import WAVE_MAX_APPROVALS, ChangeBatch, PilotWave
from soa.services import SoaError
from soa.services.approvals import wave_approve, wave_reject
from soa.services.wave_run import wave_pause, wave_start
from soa.services.waves import wave_cancel, wave_create, wave_update, wave_withdraw
from tests.soa.test_wave_support import cast, make_mailbox, new_wave, submitted_wave
from writeback.models import WritebackTask

TOO_LONG_REASON = "r" * (REASON_MAX_LENGTH + 1)


@pytest.fixture
def people(make_user):
    return cast(make_user)


# -- waves -------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_wave_description_has_a_maximum_length(people):
    with pytest.raises(SoaError, match=f"The description is too long .* {DESCRIPTION_MAX_LENGTH:,} characters"):
        wave_create(actor=people["op"], name="W", direction="TO_CLOUD", description="d" * (2 * 1024 * 1024))
    assert not PilotWave.objects.exists()
    wave = wave_create(actor=people["op"], name="W", direction="TO_CLOUD", description="d" * DESCRIPTION_MAX_LENGTH)
    with pytest.raises(SoaError, match="The description is too long"):
        wave_update(actor=people["op"], wave_id=wave.pk, description="d" * (DESCRIPTION_MAX_LENGTH + 1))
    long = "d" * (DESCRIPTION_MAX_LENGTH + 1)
    form = WaveCreateForm({"name": "X", "direction": WaveDirection.TO_CLOUD, "required_approvals": 1,
                           "batch_size": 50, "max_rate": 5, "description": long})  # fmt: skip
    assert not form.is_valid() and "description" in form.errors


@pytest.mark.django_db
def test_required_approvals_is_bounded_in_the_form_and_the_service(people):
    for value in ("100000000000000000000", "1e20", str(WAVE_MAX_APPROVALS + 1)):
        form = WaveCreateForm({"name": "X", "direction": WaveDirection.TO_CLOUD, "required_approvals": value,
                               "batch_size": 50, "max_rate": 5})  # fmt: skip
        assert not form.is_valid() and "required_approvals" in form.errors
    for value in (10**20, WAVE_MAX_APPROVALS + 1):
        with pytest.raises(SoaError, match=f"at most {WAVE_MAX_APPROVALS} distinct approvers"):
            wave_create(actor=people["op"], name="W", direction="TO_CLOUD", required_approvals=value)
    with pytest.raises(SoaError, match="batch size"):
        wave_create(actor=people["op"], name="W", direction="TO_CLOUD", batch_size=True)
    assert not PilotWave.objects.exists()


@pytest.mark.django_db
def test_every_wave_reason_has_a_maximum_length(people):
    for form_class in (ReasonForm, RequiredReasonForm, ApproveForm):
        assert "reason" in form_class({"reason": TOO_LONG_REASON}).errors
    draft = new_wave(people["op"], make_mailbox("Ann Archer"))
    with pytest.raises(SoaError, match="The reason is too long"):
        wave_cancel(actor=people["op"], wave_id=draft.pk, reason=TOO_LONG_REASON)
    submitted = submitted_wave(people["op"], make_mailbox("Bob Baker"), name="Second")
    for call in (
        lambda: wave_withdraw(actor=people["op"], wave_id=submitted.pk, reason=TOO_LONG_REASON),
        lambda: wave_reject(actor=people["approver"], wave_id=submitted.pk, reason=TOO_LONG_REASON),
        lambda: wave_approve(
            actor=people["approver"], wave_id=submitted.pk, reason=TOO_LONG_REASON, acknowledge_warnings=True
        ),
    ):
        with pytest.raises(SoaError, match="is too long"):
            call()
    approved = wave_approve(actor=people["approver"], wave_id=submitted.pk, reason="ok", acknowledge_warnings=True)
    running = wave_start(actor=people["op"], wave_id=approved.pk)
    with pytest.raises(SoaError, match="The reason is too long"):
        wave_pause(actor=people["op"], wave_id=running.pk, reason=TOO_LONG_REASON)
    assert not AuditEvent.objects.filter(reason=TOO_LONG_REASON).exists()


# -- role grants, drift repairs, writeback retries, bulk batches -----------------------------------------------------


@pytest.mark.django_db
def test_role_grant_reasons_and_scopes_have_maximum_lengths(make_user):
    admin, user = make_user("root", Role.ADMIN), make_user("uma")
    with pytest.raises(PortalError, match="The reason is too long"):
        role_assign(actor=admin, user=user, role=Role.AUDITOR, tenant_wide=True, reason=TOO_LONG_REASON)
    scopes = [f"OU=Unit{n},DC=corp,DC=example,DC=com" for n in range(SCOPES_MAX_LENGTH // 30)]
    with pytest.raises(PortalError, match="The list of OU scopes is too long"):
        role_assign(actor=admin, user=user, role=Role.HELPDESK, scopes=scopes, reason="why")
    assert not RoleAssignment.objects.filter(user=user).exists()
    role_assign(actor=admin, user=user, role=Role.AUDITOR, tenant_wide=True, reason="why")
    with pytest.raises(PortalError, match="The reason is too long"):
        role_revoke(actor=admin, user=user, role=Role.AUDITOR, reason=TOO_LONG_REASON)
    assert RoleAssignment.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_page_reasons_past_the_limit_are_answered_400_and_change_nothing(client, make_user):
    admin = make_user("root", Role.ADMIN)
    client.force_login(admin)
    mailbox = make_mailbox("Ann Archer")
    task = WritebackTask.objects.create(
        mailbox=mailbox, source="manual", state=WritebackTask.State.FAILED, error="refused"
    )
    batch = ChangeBatch.objects.create(created_by=admin, idempotency_key="k1", state=BatchState.RUNNING)
    for url in (
        reverse("drift_bulk_repair"),
        reverse("drift_repair", args=[1]),
        reverse("writeback_retry", args=[mailbox.pk, task.pk]),
        reverse("bulk_pause", args=[batch.pk]),
    ):
        response = client.post(url, {"reason": TOO_LONG_REASON})
        assert response.status_code == 400 and b"The reason is too long" in response.content, url
    assert WritebackTask.objects.get(pk=task.pk).state == WritebackTask.State.FAILED
    assert ChangeBatch.objects.get(pk=batch.pk).state == BatchState.RUNNING
    assert not AuditEvent.objects.filter(reason=TOO_LONG_REASON).exists()
    response = client.post(reverse("role_assign"), {"reason": TOO_LONG_REASON, "role": "auditor", "tenant_wide": "on"})
    assert b"Ensure this value has at most 1000 characters" in response.content


# -- cursors -----------------------------------------------------------------------------------------------------


def _raw(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode()


def test_a_cursor_round_trips():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert decode_cursor(encode_cursor("Ann", 42), (str, int)) == ("Ann", 42)
    assert decode_cursor(encode_cursor(when, 7), (dt.datetime, int)) == (when, 7)


@pytest.mark.parametrize(
    ("cursor", "why"),
    [
        (_raw(b'["a",Infinity]'), "not a value a page link holds"),
        (_raw(b'["a",NaN]'), "not a value a page link holds"),
        (_raw(b"1e400"), "not a value a page link holds"),
        (_raw(b'["a",1e400]'), "not a value a page link holds"),
        (_raw(b'["a",1.0]'), "not a value a page link holds"),
        (_raw(b"[" * 1000 + b"]" * 1000), "too long"),
        (_raw(b"[" * 600 + b"]" * 600)[:1024], "not readable"),
        (_raw(b'["a",' + b"9" * 700 + b"]"), "not an id"),
        (_raw(b'["a",100000000000000000000]'), "not an id"),
        (_raw(b'["a",0]'), "not an id"),
        (_raw(b'["a",true]'), "not an id"),
        (_raw(b'[["a"],1]'), "not a text key"),
        (_raw(b'["a",1,2]'), "wrong shape"),
        (_raw(b'{"a":1}'), "wrong shape"),
        ("@@garbage", "not readable"),
        ("\u00e9", "not readable"),
    ],
)
def test_a_crafted_cursor_is_refused_with_why(cursor, why):
    with pytest.raises(BadCursor, match=f"The page link is not valid \\({why}\\)"):
        decode_cursor(cursor, (str, int))


def test_a_cursor_time_must_be_a_time():
    with pytest.raises(BadCursor, match="not a time"):
        decode_cursor(encode_cursor("yesterday", 1), (dt.datetime, int))


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["mailbox_list", "drift"])
def test_list_pages_answer_a_crafted_cursor_with_400(client, make_user, page):
    client.force_login(make_user("root", Role.ADMIN))
    response = client.get(reverse(page), {"after": _raw(b'["a",Infinity]')})
    assert response.status_code == 400
    assert "The page link is not valid" in response.content.decode()
