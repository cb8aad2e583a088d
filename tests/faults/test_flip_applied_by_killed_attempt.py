"""A flip applied by an attempt that was killed before recording it: the retry reads Exchange first, finds the flip
there and sends nothing, and its audit event says so (``found_applied`` and a reason naming the earlier attempt), not
just ``changed=false``. From the audit log alone, every member then has exactly one ``member_done`` event, and exactly
one of: a Set-Mailbox that changed the flag, or a re-read that found an earlier attempt had.

A Set-* that changes nothing succeeds with the warning "no settings of '<obj>' have been modified" (exchange-facts.md
§4.3, [MS S51]): a second write would not fail, it would just be invisible as such in ``changed``; the emulator's
Set-Mailbox counter is what Exchange received, to compare with the log.
"""

import pytest
from django.conf import settings

from soa.choices import Authority, MemberState, WaveState
from soa.models import WaveMember
from soa.wave_progress import wave_progress
from tests.faults.wave_support import die_after_claiming, heartbeat_stops, member_events, tenant_fixtures
from tests.soa.test_wave_support import cast, movable, set_mailbox_calls, started_wave, work
from writeback.jobs.waves import wave_watch
from writeback.wave_jobs import FOUND_APPLIED

pytestmark = pytest.mark.django_db(transaction=True)

tenant, exchange = tenant_fixtures(users=12, seed=83)


def test_the_retry_of_a_flip_a_killed_attempt_applied_says_it_found_the_flip_already_applied(exchange, make_user):
    people = cast(make_user)
    mailboxes = movable(5)
    wave = started_wave(people, mailboxes, batch_size=5, max_rate=50.0)
    claimed = die_after_claiming(wave, applied=2)  # killed after two Set-Mailbox calls, before recording either
    assert set_mailbox_calls(exchange) == 2
    assert wave_watch() == 0  # a heartbeat this fresh may be a live worker's
    heartbeat_stops(wave)
    # Meanwhile the running wave shows as stalled, with no rate and no time left.
    stalled = wave_progress(user=people["op"], wave=wave)
    assert stalled.stalled_seconds >= settings.WAVE_STALE_SECONDS and (stalled.rate, stalled.eta_seconds) == (
        None,
        None,
    )
    assert wave_watch() == 5  # returned to PENDING, and the wave queued again

    work()

    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED
    assert set_mailbox_calls(exchange) == 5  # two by the killed attempt, three by the retry: none twice
    applied_earlier = {member.pk for member in claimed[:2]}
    for member in WaveMember.objects.filter(wave=wave).select_related("mailbox"):
        assert member.state == MemberState.DONE and member.mailbox.authority == Authority.CLOUD
        (done,) = member_events(member, "soa.wave.member_done")  # one event each, whatever the attempts
        assert len(member_events(member, "soa.wave.member_swept")) == 1
        if member.pk in applied_earlier:
            assert done.after["found_applied"] is True and done.after["set_mailbox_sent"] is False
            assert done.reason == FOUND_APPLIED and "already applied" in done.reason
        else:
            assert "found_applied" not in done.after
            assert done.after["set_mailbox_sent"] is True and done.after["changed"] is True
            assert done.reason == ""
