"""The Exchange budget shared by worker processes in Redis (writeback.exchange.shared_budget): the Lua bucket against
the real Redis, the client taking from it against the HTTPS emulator's throttle, and the per-process fallback with
its health status when Redis does not answer.

Exchange documents only ``Rate-Limit-Limit`` (30000), ``Rate-Limit-Remaining`` and ``Rate-Limit-Reset``
(exchange-facts §4.5), no refill rate: the bucket learns it from those headers, as the per-process pacing does.
"""

import threading
import time
import uuid

import pytest
import redis

from tests.exchange_fixtures import RecordingSleep, exchange_config
from writeback.exchange import ExchangeOnlineClient
from writeback.exchange.budget import Budget
from writeback.exchange.shared_budget import RECONNECT_SECONDS, SharedBudget


@pytest.fixture
def key(redis_client):
    name = f"test:exo-budget:{uuid.uuid4()}"
    yield name
    redis_client.delete(name)


def _budget(redis_url, key, **kwargs) -> SharedBudget:
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return SharedBudget(lambda: client, key, **kwargs)


def _announced(limit: int, remaining: int, full_in: float) -> Budget:
    return Budget(limit=limit, remaining=remaining, full_in=full_in, seen=0.0)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the bucket in Redis ------------------------------------------------------------------------------------------


def test_nothing_announced_means_no_wait_and_nothing_stored(redis_url, redis_client, key):
    budget = _budget(redis_url, key)
    assert [budget.take(reserve=1) for _ in range(5)] == [0.0] * 5
    assert not redis_client.exists(key)


def test_takes_count_down_to_the_reserve_then_queue_one_behind_the_other(redis_url, key):
    budget = _budget(redis_url, key)
    # 7 missing, full in 600 s: the rate lies between 6/600 and 7/600; the bucket refills at the lower end.
    assert budget.observe(_announced(10, 3, 600.0))
    assert float(budget.state()["rate"]) == pytest.approx(0.01)
    waits = [budget.take(reserve=1) for _ in range(4)]
    assert waits[:2] == [0.0, 0.0]  # 3 -> 2 -> 1: the reserve of one is left
    assert waits[2] == pytest.approx(100.0, rel=1e-3)  # the next one is back in 1 / 0.01 s
    assert waits[3] == pytest.approx(200.0, rel=1e-3)  # and the one after it behind it, not at the same time


def test_a_response_only_ever_lowers_what_is_left(redis_url, key):
    budget = _budget(redis_url, key)
    budget.observe(_announced(10, 3, 600.0))
    budget.take(reserve=1)  # a request of another process, sent, not yet answered
    budget.observe(_announced(10, 8, 600.0))  # an older answer, or another app's spend refunded: not believed
    assert float(budget.state()["tokens"]) == pytest.approx(2.0, abs=0.01)
    budget.observe(_announced(10, 0, 600.0))  # Exchange counts less than the bucket: Exchange is right
    assert float(budget.state()["tokens"]) == 0.0


def test_the_rate_is_narrowed_across_responses_and_relearned_when_it_changes(redis_url, key):
    budget = _budget(redis_url, key)
    budget.observe(_announced(10, 4, 2.0))  # between 5/2 and 6/2
    assert (float(budget.state()["low"]), float(budget.state()["high"])) == (pytest.approx(2.5), pytest.approx(3.0))
    budget.observe(_announced(10, 6, 1.5))  # between 2 and 2.67: together, 2.5 to 2.67
    budget.observe(_announced(10, 2, 2.7))  # between 2.59 and 2.96: together, 2.59 to 2.67
    state = budget.state()
    assert float(state["rate"]) == float(state["low"]) == pytest.approx(7 / 2.7)
    assert float(state["high"]) == pytest.approx(4 / 1.5)
    budget.observe(_announced(10, 0, 1.0))  # between 9 and 10: no longer the same rate, learned again
    assert float(budget.state()["rate"]) == pytest.approx(9.0)


def test_a_response_without_the_headers_forgets_the_budget(redis_url, redis_client, key):
    budget = _budget(redis_url, key)
    budget.observe(_announced(10, 0, 600.0))
    assert budget.take(reserve=1) > 0
    budget.observe(None)
    assert not redis_client.exists(key)
    assert budget.take(reserve=1) == 0.0


def test_the_bucket_expires_once_it_would_be_full_again(redis_url, redis_client, key):
    budget = _budget(redis_url, key)
    budget.observe(_announced(10, 5, 4.0))  # rate 1/s from the lower bound: 5 missing back in 5 s
    assert 1 <= redis_client.ttl(key) <= 6


def test_concurrent_takers_never_get_the_same_request(redis_url, key):
    """Eight processes' worth of clients (each its own Redis connection) take 160 requests from a bucket holding 50
    that refills at 0.001/s: exactly 49 go at once (one left as the reserve), and each of the others is told a wait
    of its own, one refill apart."""
    _budget(redis_url, key).observe(_announced(100, 50, 50_000.0))
    waits: list[float] = []
    lock = threading.Lock()

    def taker():
        budget = _budget(redis_url, key)
        mine = [budget.take(reserve=1) for _ in range(20)]
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=taker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(waits) == 160
    assert waits.count(0.0) == 49
    queued = sorted(wait for wait in waits if wait > 0)
    assert all(later - earlier > 900 for earlier, later in zip(queued, queued[1:], strict=False))


def test_concurrent_takers_that_wait_as_told_stay_within_the_budget(redis_url, key):
    """Four threads send 40 requests as the bucket tells them, against a bucket announced empty and refilling at
    40/s. Replaying their send times through a bucket that starts empty just after the announcement and refills at
    40/s (the strictest server those headers allow) refuses none of them. Late sends (a busy machine) only help."""
    _budget(redis_url, key).observe(_announced(5, 0, 0.1))  # 5 missing back in 0.1 s: between 40/s and 50/s
    started = time.monotonic()
    sent: list[float] = []
    lock = threading.Lock()

    def sender():
        budget = _budget(redis_url, key)
        for _ in range(10):
            time.sleep(budget.take(reserve=1))
            with lock:
                sent.append(time.monotonic())

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tokens, last, refused = 0.0, started, 0
    for moment in sorted(sent):
        tokens = min(5.0, tokens + (moment - last) * 40.0)
        last = moment
        if tokens < 1.0:
            refused += 1
        else:
            tokens -= 1.0
    assert len(sent) == 40 and refused == 0


# -- when Redis does not answer ----------------------------------------------------------------------------------


def test_redis_down_means_pacing_alone_and_asking_redis_again_later(redis_url, key):
    now = [1000.0]
    connects = []
    closed = f"redis://127.0.0.1:{_closed_port()}/0"

    def connect():
        connects.append(now[0])
        url = closed if len(connects) == 1 else redis_url
        return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    budget = SharedBudget(connect, key, clock=lambda: now[0])
    assert budget.take(reserve=1) is None and budget.shared is False
    assert budget.observe(_announced(10, 0, 1.0)) is False
    assert len(connects) == 1  # not asked again at every request
    now[0] += RECONNECT_SECONDS + 1
    assert budget.observe(_announced(10, 0, 1.0)) is True and budget.shared is True
    assert budget.take(reserve=1) > 0


def _client(emulator, shared, **overrides):
    sleep = RecordingSleep()
    return ExchangeOnlineClient(exchange_config(emulator, **overrides), sleep=sleep, shared=shared), sleep


@pytest.fixture
def identity(exo_clean):
    return next(m for m in exo_clean.mailboxes() if m["IsDirSynced"])["UserPrincipalName"]


def _calls_per_second(emulator, identity) -> float:
    client, _ = _client(emulator, None, pace=False)
    client.get_mailbox(identity)
    began = time.monotonic()
    for _ in range(5):
        client.get_mailbox(identity)
    return 5 / (time.monotonic() - began)


def test_with_redis_down_the_client_paces_from_its_own_responses(exo_clean, identity, key):
    dead = SharedBudget(lambda: redis.Redis(port=_closed_port(), socket_connect_timeout=1), key)
    rate = _calls_per_second(exo_clean, identity) / 4  # a quarter of what this machine sends: it outruns the bucket
    client, sleep = _client(exo_clean, dead, max_retry_after=2 / rate)
    client.tokens.token()
    exo_clean.set_throttle(rate=rate, burst=3)
    before = exo_clean.counters()["throttled"]
    for _ in range(20):
        client.get_mailbox(identity)
    assert exo_clean.counters()["throttled"] - before == 0
    assert sleep.calls and dead.shared is False


def test_two_clients_taking_from_one_shared_budget_are_not_throttled(exo_clean, identity, redis_url, key):
    """Two clients (two worker processes' worth: their own sessions, tokens and Redis connections) call as fast as
    they can against an app budget a quarter of what one of them sends: each is paced by the bucket both take from,
    and the emulator answers none of their calls 429."""
    rate = _calls_per_second(exo_clean, identity) / 4
    clients = [_client(exo_clean, _budget(redis_url, key), max_retry_after=10 / rate) for _ in range(2)]
    for client, _ in clients:
        client.tokens.token()
    exo_clean.set_throttle(rate=rate, burst=3)
    before = exo_clean.counters()

    def calls(client):
        for _ in range(15):
            client.get_mailbox(identity)

    threads = [threading.Thread(target=calls, args=(client,)) for client, _ in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = exo_clean.counters()
    assert after["by_cmdlet"]["Get-Mailbox"] - before["by_cmdlet"].get("Get-Mailbox", 0) >= 30
    assert after["throttled"] - before["throttled"] == 0
    assert all(sleep.calls for _, sleep in clients)


# -- /healthz ----------------------------------------------------------------------------------------------------


@pytest.fixture
def health(settings):
    from portal import health

    settings.HEALTH_CACHE_SECONDS = 0

    def component():
        return next(status for status in health.check_all() if status.name == "exchange budget")

    return component


@pytest.mark.django_db
def test_health_shows_the_budget_shared_in_redis(health, settings, redis_url):
    settings.EXO_TENANT, settings.ENTRA_CLIENT_ID = f"health-{uuid.uuid4()}", "app"
    status = health()
    assert status.ok and not status.essential and status.detail.startswith("shared in Redis")


@pytest.mark.django_db
def test_health_shows_the_budget_per_process_when_redis_does_not_answer(health, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    status = health()
    assert not status.ok and not status.essential
    assert status.detail.startswith("per process: Redis does not answer")


@pytest.mark.django_db
def test_health_says_per_process_when_the_setting_is_off(health, settings):
    settings.EXO_SHARED_BUDGET = False
    status = health()
    assert status.ok and status.detail.startswith("per process: EXO_SHARED_BUDGET is off")
