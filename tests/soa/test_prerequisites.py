"""The readiness page's prerequisites section (soa.prerequisites, soa.views_prerequisites): who sees it and who may
act on it, the recorded Entra Connect version against the baseline (exchange-facts §1.3), the judgements of Graph's
sync time and of the writeback sample, the canary's validation, refusals that change nothing, and what is audited.
The checks that call out are tested against the emulator and slapd in tests/writeback/test_prerequisites_job.py."""

import datetime as dt

import django_rq
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs
from soa.models import PrerequisiteCheck, PrerequisiteInput
from soa.prerequisites import (
    CHECK_JOB_ID,
    judge_connect_sync,
    judge_writeback,
    parse_version,
    prerequisite_rows,
    version_at_least,
)
from tests.soa.test_wave_support import make_mailbox

pytestmark = pytest.mark.django_db

Status = PrerequisiteCheck.Status


@pytest.fixture
def people(make_user):
    return {
        "admin": make_user("adam", Role.ADMIN),
        "auditor": make_user("audrey", Role.AUDITOR),
        "op": make_user("olga", Role.WAVE_OPERATOR),
        "helpdesk": make_user("hugo", Role.HELPDESK),
    }


@pytest.fixture(autouse=True)
def _empty_queue():
    queue = django_rq.get_queue(jobs.QUEUE)
    queue.empty()
    yield
    queue.empty()


def browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("readiness"))  # sets the CSRF cookie
    return client


def post(client: Client, name: str, data: dict | None = None):
    return client.post(reverse(name), {**(data or {}), "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def row(key: str) -> dict:
    return next(r for r in prerequisite_rows() if r["check"].key == key)


# -- judging ------------------------------------------------------------------------------------------------------


def test_versions_compare_numerically_part_by_part():
    assert parse_version("2.5.76.0") == (2, 5, 76, 0)
    assert parse_version("2.5.x") is None and parse_version("") is None and parse_version("2") is None
    assert version_at_least("2.5.76.0", "2.5.76.0") and version_at_least("2.5.190.0", "2.5.76.0")
    assert version_at_least("2.5.76", "2.5.76.0") and version_at_least("10.0.0.0", "2.5.76.0")
    assert not version_at_least("2.5.9.0", "2.5.76.0") and not version_at_least("2.4.999.0", "2.5.76.0")


def test_sync_time_is_judged_against_the_allowed_age(settings):
    settings.ENTRA_CONNECT_SYNC_MAX_AGE_HOURS = 3
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    org = {"id": "t", "onPremisesSyncEnabled": True, "onPremisesLastSyncDateTime": "2026-11-30T11:30:00Z"}
    assert judge_connect_sync(org, now=now).status == Status.MET
    old = {**org, "onPremisesLastSyncDateTime": "2026-11-30T08:59:00Z"}
    assert judge_connect_sync(old, now=now).status == Status.NOT_MET
    assert judge_connect_sync({**org, "onPremisesSyncEnabled": None}, now=now).status == Status.NOT_MET
    assert judge_connect_sync({**org, "onPremisesLastSyncDateTime": None}, now=now).status == Status.NOT_MET
    assert judge_connect_sync({}, now=now).status == Status.UNKNOWN


def test_writeback_sample_judgement():
    agree = {"upn": "a@x", "exo_when_changed": "2026-11-30T10:00:00+00:00", "differing": [], "newer_in_ad": False,
             "ad_when_changed": "2026-11-30T10:20:00+00:00"}  # fmt: skip
    stale = {**agree, "upn": "b@x", "differing": ["CustomAttribute3"], "ad_when_changed": "2026-11-01T00:00:00+00:00"}
    untouched = {**agree, "upn": "c@x", "ad_when_changed": "2026-11-01T00:00:00+00:00"}
    assert judge_writeback([agree, untouched], excluded=0, settle_minutes=60).status == Status.MET
    judged = judge_writeback([agree, stale], excluded=0, settle_minutes=60)
    assert judged.status == Status.NOT_MET and "b@x (CustomAttribute3)" in judged.measured
    assert judge_writeback([untouched], excluded=0, settle_minutes=60).status == Status.UNKNOWN
    assert judge_writeback([], excluded=3, settle_minutes=60).status == Status.UNKNOWN
    newer = {**stale, "newer_in_ad": True}  # AD changed after the inventory read Exchange: not judged
    assert judge_writeback([agree, newer], excluded=0, settle_minutes=60).status == Status.MET


# -- the page -----------------------------------------------------------------------------------------------------


def test_every_role_that_sees_the_page_sees_the_results_and_only_the_admin_the_forms(client, people):
    PrerequisiteCheck.objects.create(key="connect_sync", status=Status.NOT_MET, measured="Last synced long ago.",
                                     source="Microsoft Graph GET /v1.0/organization")  # fmt: skip
    for name in ("admin", "auditor", "op"):
        client.force_login(people[name])
        page = client.get(reverse("readiness")).content.decode()
        assert 'data-testid="rd-prerequisites"' in page
        assert 'data-testid="rd-prereq-connect_sync" data-status="not_met"' in page
        assert "Last synced long ago." in page and "How to fix" in page
        assert ('data-testid="rd-prereq-check-form"' in page) == (name == "admin")
        assert ('data-testid="rd-prereq-canary-form"' in page) == (name == "admin")
    client.force_login(people["helpdesk"])
    assert client.get(reverse("readiness")).status_code == 403


@pytest.mark.parametrize("name", ["prerequisite_check", "prerequisite_version", "prerequisite_canary"])
@pytest.mark.parametrize("who", ["auditor", "op", "helpdesk"])
def test_only_an_administrator_may_post_and_a_refusal_changes_nothing(people, name, who):
    mailbox = make_mailbox("Canary Carl")
    data = {"version": "2.5.190.0", "seen_where": "SYNC01", "identity": mailbox.upn, "confirm": "on"}
    response = post(browser(people[who]), name, data)
    assert response.status_code == 403
    assert not PrerequisiteInput.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="soa.prerequisites.").exists()
    assert len(django_rq.get_queue(jobs.QUEUE)) == 0


def test_a_post_without_the_csrf_token_is_refused(people):
    client = Client(enforce_csrf_checks=True)
    client.force_login(people["admin"])
    response = client.post(reverse("prerequisite_version"), {"version": "2.5.190.0", "seen_where": "SYNC01"})
    assert response.status_code == 403
    assert not PrerequisiteInput.objects.exists()


def test_the_recorded_version_flips_the_check_from_not_met_to_met_and_is_audited(people, settings):
    settings.ENTRA_CONNECT_MIN_VERSION = "2.5.76.0"
    assert row("connect_version")["status"] == Status.UNKNOWN
    client = browser(people["admin"])
    assert post(client, "prerequisite_version", {"version": "2.4.16.0", "seen_where": "SYNC01: Get-ADSyncGlobal"
                                                 "Settings"}).status_code == 302  # fmt: skip
    below = row("connect_version")
    assert below["status"] == Status.NOT_MET and "2.4.16.0 is below the baseline 2.5.76.0" in below["measured"]
    assert "recorded by adam: SYNC01" in below["source"]
    assert post(client, "prerequisite_version", {"version": "2.5.76.0", "seen_where": "SYNC01"}).status_code == 302
    assert row("connect_version")["status"] == Status.MET
    events = AuditEvent.objects.filter(action="soa.prerequisites.connect_version_recorded").order_by("id")
    assert [e.after["version"] for e in events] == ["2.4.16.0", "2.5.76.0"]
    # The same record again changes nothing (a double click, another administrator saying the same).
    post(client, "prerequisite_version", {"version": "2.5.76.0", "seen_where": "SYNC01"})
    assert events.count() == 2 and PrerequisiteInput.objects.count() == 2


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"version": "2.5", "seen_where": ""}, b"This field is required."),
        ({"version": "two point five", "seen_where": "SYNC01"}, b"Enter a version number such as 2.5.76.0."),
        ({"version": "2.5.76.0", "seen_where": "x" * 301}, b"at most 300 characters"),
    ],
)
def test_a_malformed_version_is_refused_with_the_reason_and_nothing_changes(people, data, error):
    response = post(browser(people["admin"]), "prerequisite_version", data)
    assert response.status_code == 400 and error in response.content
    assert not PrerequisiteInput.objects.exists() and not AuditEvent.objects.filter(
        action__startswith="soa.prerequisites.").exists()  # fmt: skip


def test_picking_a_canary_needs_confirmation_and_a_synced_mailbox_in_exchange(people):
    client = browser(people["admin"])
    synced = make_mailbox("Canary Carl")
    cloud_only = make_mailbox("Cloud Cora", is_dir_synced=False)
    absent = make_mailbox("Gone Gary", in_exo=False)
    cases = [
        ({"identity": synced.upn}, b"Tick the box to confirm"),
        ({"identity": "nobody@corp.example.com", "confirm": "on"}, b"No mailbox in the inventory"),
        ({"identity": cloud_only.upn, "confirm": "on"}, b"is not directory-synchronised"),
        ({"identity": absent.upn, "confirm": "on"}, b"was not found in Exchange Online"),
    ]
    for data, error in cases:
        response = post(client, "prerequisite_canary", data)
        assert response.status_code == 400 and error in response.content, data
    assert not PrerequisiteInput.objects.exists() and len(django_rq.get_queue(jobs.QUEUE)) == 0


@pytest.mark.django_db(transaction=True)
def test_a_confirmed_canary_is_recorded_audited_and_queues_one_run(people):
    client = browser(people["admin"])
    mailbox = make_mailbox("Canary Carl")
    response = post(client, "prerequisite_canary", {"identity": mailbox.primary_smtp.upper(), "confirm": "on"})
    assert response.status_code == 302 and response["Location"].endswith("#prerequisites")
    canary = PrerequisiteInput.objects.get(kind=PrerequisiteInput.Kind.CANARY)
    assert canary.mailbox == mailbox and canary.recorded_by == people["admin"]
    (event,) = AuditEvent.objects.filter(action="soa.prerequisites.canary_requested")
    assert event.actor == people["admin"] and event.after["canary"] == mailbox.upn
    queue = django_rq.get_queue(jobs.QUEUE)
    assert [job.id for job in queue.jobs] == [CHECK_JOB_ID]
    # While that run waits, asking again records and queues nothing more.
    post(client, "prerequisite_canary", {"identity": mailbox.upn, "confirm": "on"})
    post(client, "prerequisite_check")
    assert PrerequisiteInput.objects.count() == 1 and len(queue) == 1
    assert not AuditEvent.objects.filter(action="soa.prerequisites.check_requested").exists()


def test_results_render_with_their_evidence_time_source_and_error(client, people):
    when = timezone.now() - dt.timedelta(minutes=5)
    PrerequisiteCheck.objects.create(
        key="writeback",
        status=Status.UNKNOWN,
        measured="The source could not be read.",
        source="AD (directory settings)",
        error="bind refused",
        checked_at=when,
    )
    PrerequisiteCheck.objects.create(
        key="exchange_role",
        status=Status.NOT_MET,
        measured="Exchange refused the app.",
        evidence={"canary": "carl@corp.example.com", "exchange_error": "Access denied"},
    )
    client.force_login(people["auditor"])
    page = client.get(reverse("readiness")).content.decode()
    assert "Error: bind refused" in page and f"{when:%Y-%m-%d %H:%M} UTC" in page
    assert "carl@corp.example.com" in page and "Access denied" in page
    assert 'data-testid="rd-prereq-writeback" data-status="unknown"' in page
    assert "Prerequisites: 0 of 4 met" in page
