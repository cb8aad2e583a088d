"""Retry-After in full (issue 15, point 9): both of its forms, on 503 as on 429, and a wait longer than the client's
cap handed back to the caller as ExoRetryLater instead of being slept through or cut short."""

import datetime as dt

import pytest
import requests

from tests.exchange_fixtures import RecordingSleep, exchange_config
from writeback.exchange import ExchangeOnlineClient
from writeback.exchange.errors import (
    ExoRetryLater,
    ExoThrottled,
    ExoTransient,
    error_for_response,
    retry_after_seconds,
)

NOW = dt.datetime(2026, 9, 1, 12, 0, 0, tzinfo=dt.UTC)


def _response(status: int, headers: dict[str, str]) -> requests.Response:
    """A bare response, as requests builds it, for the pure parsing functions."""
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    response._content = b'{"error": {"code": "ServiceUnavailable", "message": "busy"}}'
    return response


def test_retry_after_in_seconds():
    """exchange-facts §4.5: Exchange sends Retry-After as seconds (the module parses a double)."""
    assert retry_after_seconds(_response(429, {"Retry-After": "7"})) == 7.0
    assert retry_after_seconds(_response(429, {"Retry-After": "2.5"})) == 2.5


def test_retry_after_as_an_http_date_is_measured_from_the_responses_date():
    """RFC 9110 §10.2.3 allows an HTTP-date; measured from the response's Date header, so clock skew does not
    change the wait."""
    headers = {"Retry-After": "Tue, 01 Sep 2026 12:02:00 GMT", "Date": "Tue, 01 Sep 2026 12:00:30 GMT"}
    assert retry_after_seconds(_response(503, headers), now=NOW - dt.timedelta(hours=1)) == 90.0


def test_retry_after_as_an_http_date_without_a_date_header_uses_the_local_clock():
    response = _response(503, {"Retry-After": "Tue, 01 Sep 2026 12:05:00 GMT"})
    assert retry_after_seconds(response, now=NOW) == 300.0
    past = _response(503, {"Retry-After": "Tue, 01 Sep 2026 11:00:00 GMT"})
    assert retry_after_seconds(past, now=NOW) == 0.0


def test_unreadable_or_absent_retry_after_is_none():
    assert retry_after_seconds(_response(429, {"Retry-After": "soon"})) is None
    assert retry_after_seconds(_response(429, {})) is None


def test_a_503_carries_its_retry_after():
    """RFC 9110 §15.6.4: a 503 may say how long the service expects to be unavailable."""
    error = error_for_response(
        _response(503, {"Retry-After": "120"}), cmdlet="Get-Mailbox", identity="x", request_id="r"
    )
    assert isinstance(error, ExoTransient) and error.retry_after == 120.0
    assert (
        error_for_response(_response(500, {"Retry-After": "120"}), cmdlet="", identity="", request_id="").retry_after
        is None
    )


def test_a_long_503_retry_after_becomes_retry_later_and_a_short_one_is_waited(exo_clean):
    """The client's delay rule for one error (no call made): a 503's Retry-After is honoured like a 429's."""
    client = ExchangeOnlineClient(exchange_config(exo_clean, max_retry_after=60.0))
    assert client._delay(ExoTransient("busy", retry_after=3.0), attempt=1) == 3.0
    before = dt.datetime.now(dt.UTC)
    with pytest.raises(ExoRetryLater) as info:
        client._delay(ExoTransient("busy", retry_after=600.0, cmdlet="Set-Mailbox"), attempt=1)
    assert info.value.retry_at >= before + dt.timedelta(seconds=600)
    assert isinstance(info.value.cause, ExoTransient) and info.value.retryable


def test_a_429_asking_for_longer_than_the_cap_raises_retry_later_without_sleeping(exo_clean):
    """exchange-facts §4.5: 429 with Retry-After is to be honoured. A wait longer than the client's cap is not cut
    short (that would only earn another 429) nor slept in the worker: the caller gets the time to come back."""
    exo_clean.set_throttle(rate=0.01, burst=1)  # one request, then a refill only every 100 s
    identity = next(m for m in exo_clean.mailboxes() if m["IsDirSynced"])["UserPrincipalName"]
    sleeps = RecordingSleep()
    client = ExchangeOnlineClient(exchange_config(exo_clean, max_retry_after=30.0, pace=False), sleep=sleeps)
    client.get_mailbox(identity)
    before = dt.datetime.now(dt.UTC)
    with pytest.raises(ExoRetryLater) as info:
        client.get_mailbox(identity)
    assert sleeps.calls == []
    assert isinstance(info.value.cause, ExoThrottled) and info.value.cause.retry_after > 30.0
    assert info.value.retry_at >= before + dt.timedelta(seconds=30)
    assert "asked to retry after" in str(info.value)
    assert exo_clean.counters()["throttled"] == 1
