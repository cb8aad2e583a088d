"""A worker dies mid-batch, then the wave is paused and cancelled: its in-flight members used to stay RUNNING forever
on the cancelled wave, one of them flipped in Exchange while the portal showed it under AD's authority with no audit
event. Now, once their heartbeat is stale, the watch every worker runs re-reads Exchange for each and records what it
found: DONE (and the mailbox under the cloud's authority) for the one the dead worker had flipped, SKIPPED for the
others, each with its audit event. Nothing is written to Exchange to settle them.
"""

import re

import pytest
from django.urls import reverse

from portal.audit import verify_chain
from soa.choices import Authority, MemberState, WaveState
from soa.models import Mailbox, WaveMember
from soa.services.wave_run import wave_pause
from soa.services.waves import wave_cancel
from soa.wave_progress import wave_progress
from tests.faults.wave_support import die_after_claiming, heartbeat_stops, member_events, tenant_fixtures
from tests.soa.test_wave_support import cast, movable, set_mailbox_calls, started_wave
from writeback.jobs.waves import wave_watch

pytestmark = pytest.mark.django_db(transaction=True)

tenant, exchange = tenant_fixtures(users=12, seed=89)


def test_cancel_after_a_worker_died_settles_every_member_with_what_exchange_shows(exchange, make_user, client):
    people = cast(make_user)
    mailboxes = movable(6)
    wave = started_wave(people, mailboxes, batch_size=4, max_rate=50.0)
    claimed = die_after_claiming(wave, applied=1)  # four in flight; the first had reached Exchange
    wave_pause(actor=people["op2"], wave_id=wave.pk, reason="Worker died")
    wave_cancel(actor=people["op2"], wave_id=wave.pk, reason="Called off")
    running = WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING)
    assert set(running.values_list("pk", flat=True)) == {member.pk for member in claimed}
    assert WaveMember.objects.filter(wave=wave, state=MemberState.SKIPPED).count() == 2  # the two never claimed

    # The page says the wave has stalled, and keeps polling while members are in flight.
    heartbeat_stops(wave)
    wave.refresh_from_db()
    progress = wave_progress(user=people["op"], wave=wave)
    assert progress.stalled and progress.live and progress.running == 4 and progress.rate is None
    client.force_login(people["op"])
    page = client.get(reverse("wave_detail", args=[wave.pk])).content.decode()
    assert re.search(r"Stalled: no worker has touched this wave for \d+ s", page)
    assert "unknown while stalled" in page
    health = client.get("/healthz").json()
    assert "waves" in health["degraded"] and health["down"] == [] and not health["components"]["waves"]["ok"]

    assert wave_watch() == 4

    wave.refresh_from_db()
    assert wave.state == WaveState.CANCELLED
    assert not WaveMember.objects.filter(wave=wave, state=MemberState.RUNNING).exists()
    flipped = WaveMember.objects.get(pk=claimed[0].pk)
    assert flipped.state == MemberState.DONE
    assert Mailbox.objects.get(pk=flipped.mailbox_id).authority == Authority.CLOUD  # what Exchange says
    (done,) = member_events(flipped, "soa.wave.member_done")
    assert done.after["found_applied"] is True and done.after["set_mailbox_sent"] is False
    for member in claimed[1:]:
        member.refresh_from_db()
        assert member.state == MemberState.SKIPPED and member.finished_at is not None
        assert Mailbox.objects.get(pk=member.mailbox_id).authority == Authority.ON_PREM
        (skipped,) = member_events(member, "soa.wave.member_skipped")
        assert "re-read found IsExchangeCloudManaged=False" in skipped.reason
        assert skipped.after["state"] == MemberState.SKIPPED
    assert set_mailbox_calls(exchange) == 1  # only the dead worker's: settling reads, it never writes
    settled = wave_progress(user=people["op"], wave=wave)
    assert not settled.live and not settled.stalled and (settled.done, settled.skipped) == (1, 5)
    assert wave_watch() == 0  # nothing left to settle
    assert client.get("/healthz").json()["components"]["waves"]["ok"]
    assert "Stalled" not in client.get(reverse("wave_detail", args=[wave.pk])).content.decode()
    assert verify_chain()[1] is None
