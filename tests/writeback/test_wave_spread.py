"""A wave's batches spread over workers (WAVE_PARALLEL_BATCHES, writeback.wave_spread): helper batches are queued up
to the limit, every member is still flipped once, and the wave's rate holds across its batches through Redis (or, when
Redis does not answer, by each batch taking its share). Real directory, emulator and Redis; the worker is the
in-process SimpleWorker (tests/writeback/test_wave_workers.py runs real worker processes)."""

import random
import socket

import django_rq
import pytest
import redis

from portal.models import AuditEvent
from soa.choices import MemberState, WaveState
from soa.jobs import WAVE_RUN_JOB
from soa.models import PilotWave, WaveMember
from tests.soa.test_wave_support import movable, set_mailbox_calls, started_wave, work
from tests.writeback.test_wave_jobs import exchange, people, tenant  # noqa: F401 - the fixtures of those tests
from writeback import wave_jobs
from writeback.wave_spread import WaveSlots, other_batches

pytestmark = pytest.mark.django_db(transaction=True)


def _queued_batches(wave_id: int) -> int:
    queue = django_rq.get_queue(wave_jobs.QUEUE)
    jobs = [queue.fetch_job(job_id) for job_id in queue.get_job_ids()]
    return sum(1 for job in jobs if job and job.func_name == WAVE_RUN_JOB and job.args[0] == wave_id)


def test_a_claim_queues_helper_batches_up_to_the_limit(exchange, people, settings):  # noqa: F811
    settings.WAVE_PARALLEL_BATCHES = 3
    wave = started_wave(people, movable(30), batch_size=5, max_rate=50.0)
    assert _queued_batches(wave.pk) == 1  # the one wave_start queued
    batch = wave_jobs.claim(wave.pk)
    # 25 due members left: two more batches would help, and one is already queued besides this one.
    assert len(batch.members) == 5 and batch.counts["spread"] == 1
    assert _queued_batches(wave.pk) == other_batches(wave.pk) == 2
    assert wave_jobs.claim(wave.pk).counts["spread"] == 0  # three batches of the wave: the limit


def test_a_wave_spread_over_batches_flips_every_member_once_at_the_waves_rate(exchange, people, settings):  # noqa: F811
    settings.WAVE_PARALLEL_BATCHES = 3
    mailboxes = movable(12)
    wave = started_wave(people, mailboxes, batch_size=3, max_rate=5.0)
    work()
    assert PilotWave.objects.get(pk=wave.pk).state == WaveState.COMPLETED
    assert WaveMember.objects.filter(wave=wave, state=MemberState.DONE).count() == 12
    assert set_mailbox_calls(exchange) == 12
    done = list(AuditEvent.objects.filter(action="soa.wave.member_done").values_list("object_id", flat=True))
    assert len(done) == len(set(done)) == 12
    starts = sorted(WaveMember.objects.filter(wave=wave).values_list("started_at", flat=True))
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.19, gaps  # 1 / max_rate, whichever batch flipped each


def test_the_waves_turns_are_shared_between_batches_and_taken_alone_without_redis(redis_url, redis_client):
    wave_id = random.randrange(10**9, 2 * 10**9)  # a wave no other test has
    connect = lambda: redis.Redis.from_url(redis_url)  # noqa: E731
    first, second = WaveSlots(wave_id, 10.0, connect=connect), WaveSlots(wave_id, 10.0, connect=connect)
    try:
        waits = [first.wait(), second.wait(), first.wait()]
        assert waits[0] == pytest.approx(0.0, abs=0.01)
        assert waits[1] == pytest.approx(0.1, abs=0.01) and waits[2] == pytest.approx(0.2, abs=0.01)
    finally:
        redis_client.delete(first.key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    alone = WaveSlots(wave_id, 10.0, connect=lambda: redis.Redis(port=closed, socket_connect_timeout=1))
    assert alone.wait() is None and alone.shared is False
