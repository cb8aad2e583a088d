"""Browser check: a running wave whose next batch no worker has taken (here: the batch Redis lost) says so on its
page, readable at desktop and phone widths."""

import datetime as dt

import django_rq
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from soa.models import PilotWave
from soa.services.approvals import wave_approve
from soa.services.wave_run import wave_start
from tests.soa.test_wave_support import cast, make_mailbox, submitted_wave
from writeback import wave_jobs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_wave_no_worker_has_taken_shows_waiting_for_a_worker(page, live_server, sign_in, screenshot, make_user):
    people = cast(make_user)
    wave = submitted_wave(people["op"], make_mailbox("Ann Lee"), make_mailbox("Bob Ray"))
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=wave.pk)
    django_rq.get_queue(wave_jobs.QUEUE).empty()  # Redis lost the batch, and no worker runs
    then = timezone.now() - dt.timedelta(minutes=3)
    PilotWave.objects.filter(pk=wave.pk).update(updated_at=then, started_at=then)

    sign_in("olga")
    page.goto(f"{live_server.url}/waves/{wave.pk}/")
    note = page.get_by_test_id("progress-waiting")
    expect(note).to_contain_text("Waiting for a worker")
    screenshot("waiting-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(note).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot("waiting-390")
