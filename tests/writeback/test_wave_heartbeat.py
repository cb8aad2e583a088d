"""The heartbeat of a running batch, against the real database: a batch slower than WAVE_STALE_SECONDS (a Set-Mailbox
that Exchange holds, say) is not taken for a dead worker while its thread beats, and its members are returned soon
after the beating stops. The watch must tell a slow batch from a dead one, or it would take members from under a
live worker."""

import time as clock

import django_rq
import pytest
from django.utils import timezone

from soa.choices import MemberState
from soa.models import WaveMember
from tests.soa.test_wave_support import cast, make_mailbox, started_wave
from writeback import wave_jobs
from writeback.jobs.waves import wave_watch
from writeback.wave_heartbeat import MemberHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection

STALE = 1.0


def test_a_batch_slower_than_the_staleness_limit_is_alive_while_it_beats_and_returned_once_it_stops(
    make_user, settings
):
    settings.WAVE_STALE_SECONDS = STALE
    people = cast(make_user)
    wave = started_wave(people, [make_mailbox(name) for name in ("Ann Archer", "Bob Baker", "Cy Cole")])
    django_rq.get_queue(wave_jobs.QUEUE).empty()  # the batch is run here, not by a worker
    members = wave_jobs.claim_batch(wave.pk)
    claimed_at = timezone.now()

    with MemberHeartbeat(members, every=STALE / 10):
        while (timezone.now() - claimed_at).total_seconds() < 3 * STALE:  # three times the limit, still flipping
            clock.sleep(0.1)
        assert wave_watch() == 0
        assert WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING).count() == 3

    deadline = clock.monotonic() + 30
    returned = 0
    while returned < 3:  # the worker "died": nothing beats any more
        assert clock.monotonic() < deadline
        clock.sleep(0.1)
        returned += wave_watch()
    assert WaveMember.objects.filter(wave=wave, state=MemberState.PENDING).count() == 3
