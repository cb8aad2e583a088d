"""The rate-limit budget: reading the Rate-Limit-* headers and the wait before the next request (pure), and the
client pacing itself against the emulator's throttle (real HTTPS), counted by the emulator's own counters."""

import datetime as dt
import time

import pytest
from requests.structures import CaseInsensitiveDict

from tests.exchange_fixtures import RecordingSleep, exchange_config
from writeback.exchange import ExchangeOnlineClient
from writeback.exchange.budget import Budget, read_budget

NOW = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)


def headers(limit="10", remaining="4", reset="2026-11-23T12:00:02.000Z", **extra) -> CaseInsensitiveDict:
    values = {"Rate-Limit-Limit": limit, "Rate-Limit-Remaining": remaining, "Rate-Limit-Reset": reset, **extra}
    return CaseInsensitiveDict({name: value for name, value in values.items() if value is not None})


# -- reading the headers ---------------------------------------------------------------------------------------


def test_reads_the_emulators_headers():
    budget = read_budget(headers(), now=NOW, seen=100.0)
    assert budget == Budget(limit=10, remaining=4, full_in=2.0, seen=100.0)
    assert budget.refill_rate == pytest.approx(3.0)  # 6 missing, back in 2 s


def test_reads_exchange_onlines_own_sample_case_insensitively():
    # exchange-facts §4.5: Limit 30000, Remaining 29997, Reset about 16 s after Date.
    sample = CaseInsensitiveDict(
        {"rate-limit-limit": "30000", "RATE-LIMIT-REMAINING": "29997", "Rate-Limit-Reset": "2026-11-23T12:00:16.365Z"}
    )
    budget = read_budget(sample, now=NOW, seen=0.0)
    assert (budget.limit, budget.remaining, budget.full_in) == (30000, 29997, pytest.approx(16.365))


def test_reset_without_a_zone_is_utc_and_a_plain_number_is_seconds():
    assert read_budget(headers(reset="2026-11-23T12:00:05"), now=NOW, seen=0.0).full_in == pytest.approx(5.0)
    assert read_budget(headers(reset="2026-11-23T13:00:05+01:00"), now=NOW, seen=0.0).full_in == pytest.approx(5.0)
    assert read_budget(headers(reset="7.5"), now=NOW, seen=0.0).full_in == pytest.approx(7.5)


def test_a_reset_in_the_past_means_full_now():
    budget = read_budget(headers(reset="2026-11-23T11:59:00Z"), now=NOW, seen=0.0)
    assert budget.full_in == 0.0 and budget.refill_rate is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"limit": None},
        {"remaining": None},
        {"reset": None},
        {"limit": "lots"},
        {"remaining": "4.5"},
        {"remaining": "-1"},
        {"limit": "0", "remaining": "0"},
        {"remaining": "11"},  # more left than the limit: contradictory
        {"limit": "nan"},
        {"limit": "inf", "remaining": "inf"},
        {"reset": "tomorrow"},
        {"reset": ""},
        {"reset": "inf"},
    ],
)
def test_absent_or_garbled_headers_give_no_budget(overrides):
    assert read_budget(headers(**overrides), now=NOW, seen=0.0) is None


def test_no_headers_at_all_give_no_budget():
    assert read_budget(CaseInsensitiveDict(), now=NOW, seen=0.0) is None


def test_a_badly_skewed_local_clock_is_corrected_by_the_response_date():
    # The server says it is 12:00:00 and full at 12:00:02; the local clock runs 60 s ahead.
    skewed = read_budget(headers(Date="Mon, 23 Nov 2026 12:00:00 GMT"), now=NOW + dt.timedelta(seconds=60), seen=0)
    assert skewed.full_in == pytest.approx(2.0)
    # A small difference (Date has whole seconds) leaves the finer local clock in charge.
    close = read_budget(headers(Date="Mon, 23 Nov 2026 12:00:01 GMT"), now=NOW, seen=0.0)
    assert close.full_in == pytest.approx(2.0)
    garbled = read_budget(headers(Date="yesterday-ish"), now=NOW, seen=0.0)
    assert garbled.full_in == pytest.approx(2.0)


# -- the wait --------------------------------------------------------------------------------------------------


def test_no_wait_while_more_than_the_reserve_remains():
    budget = Budget(limit=10, remaining=2, full_in=0.8, seen=0.0)
    assert budget.wait(0.0, reserve=1, ceiling=300) == 0.0


def test_at_the_reserve_it_waits_for_one_request_to_come_back():
    budget = Budget(limit=10, remaining=1, full_in=0.9, seen=50.0)  # 9 missing in 0.9 s: 10 per second
    assert budget.wait(50.0, reserve=1, ceiling=300) == pytest.approx(0.1)
    assert budget.wait(50.04, reserve=1, ceiling=300) == pytest.approx(0.06)  # time since the response counts
    assert budget.wait(51.0, reserve=1, ceiling=300) == 0.0


def test_below_the_reserve_it_waits_until_the_reserve_is_back_plus_one():
    budget = Budget(limit=10, remaining=0, full_in=1.0, seen=0.0)
    assert budget.wait(0.0, reserve=1, ceiling=300) == pytest.approx(0.2)
    assert budget.wait(0.0, reserve=0, ceiling=300) == pytest.approx(0.1)


def test_the_wait_is_bounded_by_the_ceiling():
    budget = Budget(limit=10, remaining=0, full_in=1000.0, seen=0.0)
    assert budget.wait(0.0, reserve=1, ceiling=30.0) == 30.0


def test_a_budget_smaller_than_the_reserve_waits_for_it_to_be_full():
    budget = Budget(limit=1, remaining=0, full_in=0.5, seen=0.0)
    assert budget.wait(0.0, reserve=3, ceiling=300) == pytest.approx(0.5)


def test_exchange_onlines_budget_never_makes_a_steady_caller_wait():
    budget = Budget(limit=30000, remaining=29997, full_in=16.0, seen=0.0)
    assert budget.wait(0.0, reserve=1, ceiling=300) == 0.0


def test_a_full_budget_or_an_unknown_refill_never_waits():
    assert Budget(limit=1, remaining=1, full_in=0.0, seen=0.0).wait(0.0, reserve=5, ceiling=300) == 0.0
    assert Budget(limit=10, remaining=0, full_in=0.0, seen=0.0).wait(0.0, reserve=1, ceiling=300) == 0.0


# -- the client against the emulator ---------------------------------------------------------------------------


def _client(emulator, **overrides) -> tuple[ExchangeOnlineClient, RecordingSleep]:
    sleep = RecordingSleep()
    return ExchangeOnlineClient(exchange_config(emulator, **overrides), sleep=sleep), sleep


@pytest.fixture
def identity(exo_clean):
    return next(m for m in exo_clean.mailboxes() if m["IsDirSynced"])["UserPrincipalName"]


def _throttled_calls(emulator, client: ExchangeOnlineClient, identity: str, calls: int, rate: float) -> int:
    """Make ``calls`` Get-Mailbox calls on a freshly filled bucket; returns how many 429s the emulator sent."""
    client.tokens.token()  # sign in first: the token endpoint is not throttled, and not part of the comparison
    emulator.set_throttle(rate=rate, burst=3)  # also refills the bucket
    before = emulator.counters()
    for _ in range(calls):
        assert client.get_mailbox(identity)["UserPrincipalName"] == identity
    after = emulator.counters()
    assert after["by_cmdlet"]["Get-Mailbox"] - before["by_cmdlet"].get("Get-Mailbox", 0) >= calls
    return after["throttled"] - before["throttled"]


def test_a_paced_client_stays_within_the_budget_where_an_unpaced_one_is_throttled(exo_clean, identity):
    # The same calls; only pacing differs (the paced client's waits are capped low to keep the run short, the
    # unpaced one waits out the emulator's one-second Retry-After). The emulator's counters tell how many 429s each
    # provoked.
    # The bucket refills at a quarter of the rate this machine makes calls at, so the unpaced client outruns it
    # however busy the machine is (a fixed rate let a loaded machine's slow calls stay under it).
    unpaced, _ = _client(exo_clean, max_retry_after=1.0, pace=False)
    unpaced.tokens.token()
    exo_clean.set_throttle(rate=None)
    began = time.monotonic()
    for _ in range(5):
        unpaced.get_mailbox(identity)
    rate = 1 / (4 * (time.monotonic() - began) / 5)
    cap = 2 / rate
    paced, paced_sleep = _client(exo_clean, max_retry_after=cap)
    throttled_unpaced = _throttled_calls(exo_clean, unpaced, identity, 30, rate)
    throttled_paced = _throttled_calls(exo_clean, paced, identity, 30, rate)
    assert throttled_unpaced >= 5
    assert throttled_paced == 0
    assert paced_sleep.calls and all(0 < seconds <= cap for seconds in paced_sleep.calls)
    assert paced.budget is not None and paced.budget.limit == 3 and paced.budget.remaining <= 3
    assert unpaced.budget is not None and unpaced.budget.limit == 3  # remembered, though not acted on


def test_without_rate_limit_headers_the_client_never_waits(exo_clean, identity):
    exo_clean.set_throttle(rate=None)  # throttling off: the emulator sends no Rate-Limit-* headers
    client, sleep = _client(exo_clean)
    for _ in range(5):
        client.get_mailbox(identity)
    assert client.budget is None and sleep.calls == []


def test_a_budget_far_from_the_reserve_costs_no_wait(exo_clean, identity):
    exo_clean.set_throttle(rate=1000, burst=500)
    client, sleep = _client(exo_clean)
    for _ in range(10):
        client.get_mailbox(identity)
    assert client.budget.limit == 500 and client.budget.remaining > 400
    assert sleep.calls == []
