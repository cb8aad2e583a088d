"""The quiet period is checked again just before each flip (issue 15, point 10), with the later of Exchange's
WhenChangedUTC (read just before) and AD's change time of the user; a member inside it is deferred until it ends.

exchange-facts §1.3: after the last on-premises change, wait "the usual sync cycle plus 24 hours" before flipping;
§6: a flip made sooner races the sync, and the cloud edit can snap back. The module's tenant was seeded just
before these tests, so every AD user's modifyTimestamp is minutes old: an edit made after approval, as far as the
rule can tell."""

import datetime as dt

import pytest
from django.utils import timezone

from portal.models import AuditEvent
from soa.choices import MemberState, WaveState
from soa.models import WaveMember
from tests.soa.test_wave_support import movable, set_mailbox_calls, started_wave
from tests.writeback import test_wave_jobs
from tests.writeback.test_wave_deferral import PilotWave_state, scheduled_batches, time_passes, work
from tests.writeback.test_wave_jobs import cloud_managed_in_exchange, states
from writeback.directory import DirectoryClient, DirectoryConfig
from writeback.wave_quiet_period import ad_changed_at

tenant = test_wave_jobs.tenant
exchange = test_wave_jobs.exchange
people = test_wave_jobs.people

pytestmark = pytest.mark.django_db(transaction=True)

LONG_AGO = "2020-01-01T00:00:00Z"


def _ad_change(mailbox) -> dt.datetime:
    with DirectoryClient(DirectoryConfig.from_settings()) as directory:
        return ad_changed_at(directory, mailbox.ad_guid)


def test_a_recent_ad_change_defers_the_flip_though_exchange_is_quiet(exchange, people, settings):
    """Approved with no quiet period to respect; by flip time one applies, and AD's change time (not Exchange's,
    which is years old) says the user changed within it: no Set-Mailbox, the member waits for the period's end."""
    mailboxes = movable(2)
    wave = started_wave(people, mailboxes, batch_size=2, max_rate=50.0)
    settings.WAVE_QUIET_PERIOD_HOURS = 2
    for mailbox in mailboxes:
        exchange.update_mailbox(str(mailbox.exo_object_id), WhenChangedUTC=LONG_AGO)
    work()
    assert states(wave) == {MemberState.PENDING: 2} and set_mailbox_calls(exchange) == 0
    for member in WaveMember.objects.filter(wave=wave).select_related("mailbox"):
        ends = _ad_change(member.mailbox) + dt.timedelta(hours=2)
        assert member.not_before == ends and member.attempts == 0
        assert member.last_error.startswith(f"Deferred until {ends:%Y-%m-%d %H:%M} UTC")
        assert "changed in AD" in member.last_error and "quiet period of 2 hours" in member.last_error
    [(_, scheduled_at)] = scheduled_batches()  # the batch comes back when the first of them may move
    assert abs((scheduled_at - min(m.not_before for m in WaveMember.objects.filter(wave=wave))).total_seconds()) < 1
    released = AuditEvent.objects.filter(action="soa.wave.member_released")
    assert released.count() == 2 and all("Deferred until" in e.reason for e in released)

    settings.WAVE_QUIET_PERIOD_HOURS = 0  # as if the two hours had passed
    time_passes(wave)
    work()
    assert PilotWave_state(wave) == WaveState.COMPLETED and states(wave) == {MemberState.DONE: 2}
    assert all(cloud_managed_in_exchange(exchange, mailbox) for mailbox in mailboxes)


def test_the_later_of_exchange_and_ad_decides(exchange, people, settings):
    """Exchange's WhenChangedUTC later than AD's change: the period runs from Exchange's."""
    [mailbox] = movable(1)
    wave = started_wave(people, [mailbox], batch_size=1, max_rate=50.0)
    settings.WAVE_QUIET_PERIOD_HOURS = 2
    exo_change = (timezone.now() + dt.timedelta(minutes=30)).replace(microsecond=0)
    assert exo_change > _ad_change(mailbox)
    exchange.update_mailbox(str(mailbox.exo_object_id), WhenChangedUTC=exo_change.strftime("%Y-%m-%dT%H:%M:%SZ"))
    work()
    member = WaveMember.objects.get(wave=wave)
    assert member.state == MemberState.PENDING and member.not_before == exo_change + dt.timedelta(hours=2)
    assert "changed in Exchange Online" in member.last_error
    assert set_mailbox_calls(exchange) == 0


def test_a_quiet_mailbox_flips_at_once(exchange, people, settings):
    [mailbox] = movable(1)
    wave = started_wave(people, [mailbox], batch_size=1, max_rate=50.0)
    exchange.update_mailbox(str(mailbox.exo_object_id), WhenChangedUTC=LONG_AGO)
    since_ad_change = timezone.now() - _ad_change(mailbox)
    assert since_ad_change > dt.timedelta(0)
    settings.WAVE_QUIET_PERIOD_HOURS = since_ad_change / dt.timedelta(hours=1) / 2  # already over, but not zero
    work()
    assert PilotWave_state(wave) == WaveState.COMPLETED and set_mailbox_calls(exchange) == 1
