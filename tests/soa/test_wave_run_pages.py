"""Running controls and live progress on the wave page: start, pause, resume and retry through their services, who
may use them, their refusals shown, and the progress partial's numbers and polling. Also the progress selector
(soa.wave_progress) itself, on member rows put directly in the states each test needs.

No batch is queued here: these tests run inside a transaction that never commits, so the services' on-commit
enqueue never fires (the runner is tested in tests/writeback/test_wave_jobs.py and tests/browser/test_wave_run.py).
"""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from soa.choices import MemberState, WaveState
from soa.models import PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_pause, wave_start
from soa.wave_progress import FAILURES_SHOWN, WaveProgress, wave_progress
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


def _htmx(client, url):
    return client.get(url, HTTP_HX_REQUEST="true")


def approved_wave(people, *mailboxes, **options) -> PilotWave:
    wave = submitted_wave(people["op"], *(mailboxes or [make_mailbox("Ann Archer")]), **options)
    return wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)


def running_wave(people, *mailboxes, **options) -> PilotWave:
    return wave_start(actor=people["op"], wave_id=approved_wave(people, *mailboxes, **options).pk)


def set_states(wave: PilotWave, *states: str, error: str = "", finished_at=None) -> list[WaveMember]:
    """Put the wave's members, in id order, in ``states`` (one per member; members beyond them stay as they are)."""
    members = list(wave.members.select_related("mailbox").order_by("id"))
    finished = finished_at or timezone.now()
    for member, state in zip(members, states, strict=False):
        done = state in (MemberState.DONE, MemberState.FAILED, MemberState.SKIPPED)
        WaveMember.objects.filter(pk=member.pk).update(
            state=state,
            last_error=error if state == MemberState.FAILED else "",
            started_at=finished if state != MemberState.PENDING else None,
            finished_at=finished if done else None,
        )
    return members


def mailboxes(count: int, ou=None) -> list:
    return [make_mailbox(f"User {index:02d}", *([ou] if ou else [])) for index in range(count)]


# -- who may run ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["approver", "auditor", "admin", "helpdesk"])
def test_running_controls_are_forbidden_without_the_run_role(client, people, who):
    wave = approved_wave(people)
    signed_in(client, people[who])
    assert client.get(reverse("wave_start", args=[wave.pk])).status_code == 403
    assert client.post(reverse("wave_start", args=[wave.pk])).status_code == 403
    assert client.post(reverse("wave_resume", args=[wave.pk])).status_code == 403
    wave_start(actor=people["op"], wave_id=wave.pk)
    assert client.post(reverse("wave_pause", args=[wave.pk]), {"reason": "mine"}).status_code == 403
    member = wave.members.get()
    assert client.post(reverse("wave_member_retry", args=[wave.pk, member.pk])).status_code == 403
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.RUNNING
    if who != "helpdesk":  # wave readers see the wave but none of the controls
        page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
        assert 'data-testid="run-controls"' not in page and "Pause" not in page


def test_operator_starts_an_approved_wave_after_a_confirmation(client, people):
    wave = approved_wave(people)
    signed_in(client, people["op2"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert reverse("wave_start", args=[wave.pk]) in page and "Start the wave…" in page
    confirm = client.get(reverse("wave_start", args=[wave.pk]))
    assert confirm.status_code == 200 and "Start wave “Pilot 1” now?" in page_text(confirm)
    text = page_text(confirm)
    assert "authority of its members moves to Exchange Online, in batches of 50 at most 5 per second" in text
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.APPROVED  # the GET changed nothing
    response = client.post(reverse("wave_start", args=[wave.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("wave_detail", args=[wave.pk])
    wave.refresh_from_db()
    assert wave.state == WaveState.RUNNING and wave.started_at is not None
    assert last_event("soa.wave.started", wave).actor == people["op2"]
    page = page_text(client.get(response["Location"]))
    assert "Wave “Pilot 1” is running; its first batch is queued." in page
    assert 'data-testid="pause-form"' in page and "Start the wave…" not in page


def test_start_outside_the_window_is_not_offered_and_a_forged_post_is_refused(client, people):
    opens = timezone.now() + dt.timedelta(hours=5)
    wave = approved_wave(people, window_start=opens, window_end=opens + dt.timedelta(hours=2))
    signed_in(client, people["op"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert f"which opens at {opens:%Y-%m-%d %H:%M} UTC" in page and "Start the wave…" not in page
    response = client.post(reverse("wave_start", args=[wave.pk]))
    assert response.status_code == 409 and "only inside its schedule window" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.APPROVED


def test_start_of_a_wave_that_is_not_approved_is_refused(client, people):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"))
    response = signed_in(client, people["op"]).post(reverse("wave_start", args=[wave.pk]))
    assert response.status_code == 409
    assert "is submitted; only approved or paused waves can be started" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.SUBMITTED


def test_an_operator_scoped_to_sales_cannot_start_a_wave_with_finance_members(client, people):
    wave = approved_wave(people, make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE))
    signed_in(client, people["sales_op"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert "1 member is outside your scope for running waves" in page and "Start the wave…" not in page
    response = client.post(reverse("wave_start", args=[wave.pk]))
    assert "these members are outside your scope: finn.fisher@corp.example.com" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.APPROVED


# -- pause, resume, cancel ----------------------------------------------------------------------------------------


def test_pause_with_a_reason_then_resume(client, people):
    wave = running_wave(people)
    signed_in(client, people["op2"])
    response = client.post(reverse("wave_pause", args=[wave.pk]), {"reason": "help desk asked"}, follow=True)
    assert "is paused; the member being flipped finishes first" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.PAUSED
    event = last_event("soa.wave.paused", wave)
    assert event.actor == people["op2"] and event.reason == "help desk asked"
    text = page_text(response)
    assert 'data-testid="resume-form"' in text and reverse("wave_cancel", args=[wave.pk]) in text
    response = client.post(reverse("wave_resume", args=[wave.pk]), follow=True)
    assert "is running again; its next batch is queued" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.RUNNING
    assert last_event("soa.wave.resumed", wave).actor == people["op2"]


def test_pause_needs_no_reason(client, people):
    wave = running_wave(people)
    signed_in(client, people["op"]).post(reverse("wave_pause", args=[wave.pk]))
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.PAUSED
    assert last_event("soa.wave.paused", wave).reason == ""


@pytest.mark.parametrize("name", ["wave_pause", "wave_resume"])
def test_a_get_changes_nothing(client, people, name):
    wave = running_wave(people)
    if name == "wave_resume":
        wave_pause(actor=people["op"], wave_id=wave.pk)
    before = PilotWave.objects.get(pk=wave.pk).state
    assert signed_in(client, people["op"]).get(reverse(name, args=[wave.pk])).status_code == 405
    assert PilotWave.objects.get(pk=wave.pk).state == before


def test_refusals_are_shown_as_messages(client, people):
    wave = approved_wave(people)
    signed_in(client, people["op"])
    response = client.post(reverse("wave_pause", args=[wave.pk]), follow=True)
    assert "is approved; only running waves can be paused" in page_text(response)
    response = client.post(reverse("wave_resume", args=[wave.pk]), follow=True)
    assert "is approved; only paused waves can be resumed" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.APPROVED


def test_a_running_wave_says_to_pause_before_cancelling(client, people):
    wave = running_wave(people)
    page = page_text(signed_in(client, people["op"]).get(reverse("wave_detail", args=[wave.pk])))
    assert "To cancel a running wave, pause it first" in page
    assert reverse("wave_cancel", args=[wave.pk]) not in page
    response = client.post(reverse("wave_cancel", args=[wave.pk]), {"reason": "stop"})
    assert "pause it first, then cancel it" in page_text(response)
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.RUNNING


def test_a_missing_wave_is_404(client, people):
    signed_in(client, people["op"])
    assert client.post(reverse("wave_pause", args=[999])).status_code == 404
    assert client.get(reverse("wave_progress", args=[999]), HTTP_HX_REQUEST="true").status_code == 404


# -- retry -------------------------------------------------------------------------------------------------------


def test_a_failed_member_is_shown_with_its_reason_and_retried_alone(client, people):
    wave = running_wave(people, *mailboxes(3))
    members = set_states(wave, MemberState.DONE, MemberState.FAILED, error="ExoNotFound: no such mailbox")
    failed = members[1]
    signed_in(client, people["op"])
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    retry_url = reverse("wave_member_retry", args=[wave.pk, failed.pk])
    assert page.count(retry_url) == 2  # in the failures list and in the member table
    assert "ExoNotFound: no such mailbox" in page and failed.mailbox.upn in page
    response = client.post(retry_url, follow=True)
    assert f"{failed.mailbox.upn} is pending again and queued." in page_text(response)
    failed.refresh_from_db()
    assert (failed.state, failed.last_error, failed.attempts) == (MemberState.PENDING, "", 0)
    assert last_event("soa.wave.member_retried", failed).actor == people["op"]
    assert retry_url not in page_text(response)


def test_retry_of_a_member_that_did_not_fail_is_refused(client, people):
    wave = running_wave(people, *mailboxes(2))
    done = set_states(wave, MemberState.DONE)[0]
    response = signed_in(client, people["op"]).post(reverse("wave_member_retry", args=[wave.pk, done.pk]), follow=True)
    assert "is done in wave “Pilot 1”; only a failed member can be retried" in page_text(response)
    assert WaveMember.objects.get(pk=done.pk).state == MemberState.DONE


def test_retry_of_a_member_of_another_wave_is_404(client, people):
    wave = running_wave(people, make_mailbox("Ann Archer"))
    other = new_wave(people["op"], make_mailbox("Bob Baker"), name="Other")
    member = other.members.get()
    WaveMember.objects.filter(pk=member.pk).update(state=MemberState.FAILED)
    response = signed_in(client, people["op"]).post(reverse("wave_member_retry", args=[wave.pk, member.pk]))
    assert response.status_code == 404
    assert WaveMember.objects.get(pk=member.pk).state == MemberState.FAILED


def test_a_finished_waves_failures_offer_no_retry(client, people):
    wave = running_wave(people, *mailboxes(2))
    failed = set_states(wave, MemberState.DONE, MemberState.FAILED, error="ExoInvalidParameter: nope")[1]
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.COMPLETED_WITH_ERRORS, finished_at=timezone.now())
    page = page_text(signed_in(client, people["op"]).get(reverse("wave_detail", args=[wave.pk])))
    assert "ExoInvalidParameter: nope" in page
    assert reverse("wave_member_retry", args=[wave.pk, failed.pk]) not in page
    assert "failed members cannot be retried here" in page


# -- rollback ----------------------------------------------------------------------------------------------------


def completed_wave(people, count: int = 2) -> PilotWave:
    wave = running_wave(people, *mailboxes(count))
    set_states(wave, *[MemberState.DONE] * count)
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.COMPLETED, finished_at=timezone.now())
    return PilotWave.objects.get(pk=wave.pk)


def test_operator_creates_a_rollback_wave_of_a_completed_wave(client, people):
    source = completed_wave(people)
    signed_in(client, people["op2"])
    page = page_text(client.get(reverse("wave_detail", args=[source.pk])))
    assert "Create rollback wave…" in page
    confirm = client.get(reverse("wave_rollback", args=[source.pk]))
    assert confirm.status_code == 200 and "Create a rollback wave for “Pilot 1”?" in page_text(confirm)
    assert not PilotWave.objects.filter(rollback_of=source).exists()  # the GET changed nothing
    response = client.post(reverse("wave_rollback", args=[source.pk]))
    rollback = PilotWave.objects.get(rollback_of=source)
    assert response.status_code == 302 and response["Location"] == reverse("wave_detail", args=[rollback.pk])
    assert rollback.state == WaveState.DRAFT and rollback.members.count() == 2
    page = page_text(client.get(response["Location"]))
    assert "Draft wave “Rollback of Pilot 1” created" in page
    assert f'href="{reverse("wave_detail", args=[source.pk])}">Pilot 1</a>' in page  # "Rollback of"
    page = page_text(client.get(reverse("wave_detail", args=[source.pk])))
    assert 'data-testid="rolled-back-by"' in page and "Rollback of Pilot 1" in page
    assert "Create rollback wave…" not in page  # one open rollback at a time
    response = client.post(reverse("wave_rollback", args=[source.pk]))
    assert response.status_code == 409 and "already has an open rollback" in page_text(response)
    assert PilotWave.objects.filter(rollback_of=source).count() == 1


def test_rollback_is_not_offered_to_approvers_nor_for_unfinished_waves(client, people):
    source = completed_wave(people)
    signed_in(client, people["approver"])
    assert "Create rollback wave…" not in page_text(client.get(reverse("wave_detail", args=[source.pk])))
    assert client.post(reverse("wave_rollback", args=[source.pk])).status_code == 403
    running = running_wave(people, make_mailbox("Ann Archer"), name="Pilot 2")
    signed_in(client, people["op"])
    assert "Create rollback wave…" not in page_text(client.get(reverse("wave_detail", args=[running.pk])))
    response = client.post(reverse("wave_rollback", args=[running.pk]))
    assert "only a completed wave can be rolled back" in page_text(response)
    assert not PilotWave.objects.filter(rollback_of__isnull=False).exists()


# -- the progress partial ----------------------------------------------------------------------------------------


def test_the_progress_partial_shows_the_counts_and_polls_while_running(client, people):
    wave = running_wave(people, *mailboxes(7))
    set_states(
        wave, MemberState.DONE, MemberState.DONE, MemberState.DONE, MemberState.FAILED, MemberState.RUNNING,
        error="ExoNotFound: gone",
    )  # fmt: skip
    signed_in(client, people["auditor"])  # a reader sees the progress, without the retry buttons
    response = _htmx(client, reverse("wave_progress", args=[wave.pk]))
    text = page_text(response)
    assert response.status_code == 200 and "<html" not in text and "HX-Refresh" not in response
    assert text.lstrip().startswith('<section class="card" id="wave-progress"')
    assert 'hx-trigger="every 2s"' in text and f'hx-get="{reverse("wave_progress", args=[wave.pk])}"' in text
    assert 'data-testid="progress-done">3<' in text and 'data-testid="progress-failed">1<' in text
    assert 'data-testid="progress-pending">2<' in text and 'data-testid="progress-running">1<' in text
    assert "4 of 7 members finished (57%)" in text
    assert "ExoNotFound: gone" in text and "Retry" not in text
    # The same numbers on the plain page, for a browser without JavaScript.
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert 'data-testid="progress-done">3<' in page and 'hx-trigger="every 2s"' in page


def test_the_progress_partial_stops_polling_and_reloads_the_page_once_the_wave_ends(client, people):
    wave = running_wave(people, *mailboxes(2))
    set_states(wave, MemberState.DONE, MemberState.DONE)
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.COMPLETED, finished_at=timezone.now())
    signed_in(client, people["op"])
    response = _htmx(client, reverse("wave_progress", args=[wave.pk]))
    assert response["HX-Refresh"] == "true"
    assert "hx-trigger" not in page_text(response) and 'data-testid="progress-done">2<' in page_text(response)
    page = page_text(client.get(reverse("wave_detail", args=[wave.pk])))
    assert "hx-trigger" not in page and "Finished" in page and 'data-testid="progress-state">Completed<' in page


def test_a_paused_wave_polls_only_while_a_member_is_in_flight(client, people):
    wave = running_wave(people, *mailboxes(3))
    wave_pause(actor=people["op"], wave_id=wave.pk)
    set_states(wave, MemberState.DONE, MemberState.RUNNING)
    signed_in(client, people["op"])
    response = _htmx(client, reverse("wave_progress", args=[wave.pk]))
    assert 'hx-trigger="every 2s"' in page_text(response) and "1 member in flight finishes first" in page_text(response)
    set_states(wave, MemberState.DONE, MemberState.DONE)
    response = _htmx(client, reverse("wave_progress", args=[wave.pk]))
    assert "hx-trigger" not in page_text(response) and response["HX-Refresh"] == "true"


def test_the_progress_url_without_htmx_goes_to_the_wave_page(client, people):
    wave = running_wave(people)
    response = signed_in(client, people["op"]).get(reverse("wave_progress", args=[wave.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("wave_detail", args=[wave.pk])
    assert client.post(reverse("wave_progress", args=[wave.pk]), HTTP_HX_REQUEST="true").status_code == 405


def test_a_wave_that_never_started_shows_no_progress(client, people):
    wave = approved_wave(people)
    page = page_text(signed_in(client, people["op"]).get(reverse("wave_detail", args=[wave.pk])))
    assert 'id="wave-progress"' not in page and "Last error" not in page


def test_rate_and_time_left_are_empty_until_a_member_finishes(client, people):
    wave = running_wave(people, *mailboxes(2))
    text = page_text(signed_in(client, people["op"]).get(reverse("wave_detail", args=[wave.pk])))
    assert 'data-testid="progress-rate">—<' in text and 'data-testid="progress-eta">—<' in text


# -- the progress selector ---------------------------------------------------------------------------------------


def _started(wave: PilotWave, *, state=WaveState.RUNNING, ago: dt.timedelta, resumed_ago=None, now) -> PilotWave:
    PilotWave.objects.filter(pk=wave.pk).update(
        state=state, started_at=now - ago, updated_at=now - (resumed_ago or ago)
    )  # fmt: skip
    return PilotWave.objects.get(pk=wave.pk)


def test_progress_counts_members_by_state(people):
    now = timezone.now()
    wave = new_wave(people["op"], *mailboxes(8))
    set_states(
        wave, MemberState.DONE, MemberState.DONE, MemberState.FAILED, MemberState.SKIPPED, MemberState.RUNNING,
        error="boom",
    )  # fmt: skip
    wave = _started(wave, ago=dt.timedelta(minutes=10), now=now)
    progress = wave_progress(user=people["op"], wave=wave, now=now)
    assert (progress.total, progress.done, progress.failed, progress.skipped) == (8, 2, 1, 1)
    assert (progress.running, progress.pending, progress.remaining, progress.finished) == (1, 3, 4, 4)
    assert progress.percent == 50 and progress.live
    assert progress.started_at == wave.started_at and progress.finished_at is None


def test_rate_is_measured_over_the_last_minute_and_gives_the_time_left(people):
    now = timezone.now()
    wave = new_wave(people["op"], *mailboxes(12))
    set_states(wave, *[MemberState.DONE] * 3, finished_at=now - dt.timedelta(minutes=5))  # outside the window
    members = list(wave.members.order_by("id"))
    WaveMember.objects.filter(pk__in=[m.pk for m in members[3:9]]).update(
        state=MemberState.DONE, finished_at=now - dt.timedelta(seconds=30)
    )
    wave = _started(wave, ago=dt.timedelta(minutes=10), now=now)
    progress = wave_progress(user=people["op"], wave=wave, now=now)
    assert progress.rate == pytest.approx(6 / 60)
    assert progress.eta_seconds == 30 and progress.eta_display == "about 30 s"  # 3 left at 0.1 per second


def test_a_resumed_wave_is_measured_from_its_resume(people):
    now = timezone.now()
    wave = new_wave(people["op"], *mailboxes(6))
    set_states(wave, *[MemberState.DONE] * 4, finished_at=now - dt.timedelta(seconds=5))
    wave = _started(wave, ago=dt.timedelta(hours=2), resumed_ago=dt.timedelta(seconds=20), now=now)
    progress = wave_progress(user=people["op"], wave=wave, now=now)
    assert progress.rate == pytest.approx(4 / 20) and progress.eta_seconds == 10


def test_no_rate_while_nothing_finished_recently_or_the_wave_is_not_running(people):
    now = timezone.now()
    wave = new_wave(people["op"], *mailboxes(3))
    wave = _started(wave, ago=dt.timedelta(seconds=10), now=now)
    empty = wave_progress(user=people["op"], wave=wave, now=now)
    assert (empty.rate, empty.eta_seconds, empty.eta_display) == (None, None, "")
    set_states(wave, MemberState.DONE, finished_at=now - dt.timedelta(seconds=2))
    assert wave_progress(user=people["op"], wave=wave, now=now).rate == pytest.approx(1 / 10)
    paused = _started(wave, state=WaveState.PAUSED, ago=dt.timedelta(seconds=10), now=now)
    progress = wave_progress(user=people["op"], wave=paused, now=now)
    assert progress.rate is None and progress.eta_seconds is None and not progress.live


def test_failures_are_the_latest_first_and_limited(people):
    now = timezone.now()
    wave = new_wave(people["op"], *mailboxes(FAILURES_SHOWN + 2))
    members = list(wave.members.select_related("mailbox").order_by("id"))
    for index, member in enumerate(members):
        WaveMember.objects.filter(pk=member.pk).update(
            state=MemberState.FAILED, last_error=f"error {index}", finished_at=now - dt.timedelta(seconds=100 - index)
        )
    wave = _started(wave, ago=dt.timedelta(minutes=5), now=now)
    progress = wave_progress(user=people["op"], wave=wave, now=now)
    assert progress.failed == FAILURES_SHOWN + 2 and len(progress.failures) == FAILURES_SHOWN
    latest = progress.failures[0]
    assert (latest.member_id, latest.upn, latest.error) == (members[-1].pk, members[-1].mailbox.upn, "error 11")


def test_progress_is_none_for_people_who_may_not_read_waves(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    assert wave_progress(user=people["helpdesk"], wave=wave) is None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, ""), (0, "about 0 s"), (89, "about 89 s"), (600, "about 10 min"), (7500, "about 2 h 5 min")],
)
def test_time_left_reads_naturally(seconds, shown):
    progress = WaveProgress(
        state=WaveState.RUNNING, total=1, pending=1, running=0, done=0, failed=0, skipped=0, rate=None,
        eta_seconds=seconds, failures=[], started_at=None, finished_at=None,
    )  # fmt: skip
    assert progress.eta_display == shown


def test_a_finished_wave_shows_its_average_rate_pauses_included(client, people):
    now = timezone.now()
    wave = new_wave(people["op"], *mailboxes(5))
    set_states(wave, *[MemberState.DONE] * 4, MemberState.FAILED, finished_at=now - dt.timedelta(seconds=5))
    PilotWave.objects.filter(pk=wave.pk).update(
        state=WaveState.COMPLETED_WITH_ERRORS,
        started_at=now - dt.timedelta(seconds=55),
        finished_at=now - dt.timedelta(seconds=5),
    )
    wave.refresh_from_db()
    progress = wave_progress(user=people["op"], wave=wave, now=now)
    assert progress.rate is None and progress.average_rate == pytest.approx(5 / 50)
    text = page_text(signed_in(client, people["op"]).get(reverse("wave_detail", args=[wave.pk])))
    assert "0.1 mailboxes/s on average from start to finish, pauses included" in text
    assert wave_progress(user=people["op"], wave=new_wave(people["op"], name="Other"), now=now).average_rate is None
