"""One Exchange Online rate-limit budget for every worker process, kept in Redis.

Exchange counts requests per app and tenant, not per process: a client pacing itself from its own last response
(writeback/exchange/budget.py) believes it has the whole budget, so N workers spend it N times over and collect 429s.
Here the budget is one token bucket in Redis, keyed by tenant and app, that every process takes from before each
request and every response corrects.

Exchange documents no refill rate, only ``Rate-Limit-Limit``, ``Rate-Limit-Remaining`` and ``Rate-Limit-Reset``
(exchange-facts §4.5), so the headers stay in charge:

- every response's headers set the bucket: what is left is never more than ``Remaining`` (requests taken since, by
  any process, stay taken), and the refill rate is learned as ``(limit - remaining) / (reset - now)``. A
  ``Remaining`` rounded down to a whole request puts the true rate between ``(missing - 1) / full_in`` and
  ``missing / full_in``; the bucket keeps the intersection of those intervals across responses (learned afresh when
  a response falls outside it: the rate changed) and refills at its low end, so rounding makes it err slow. Whether
  Exchange rounds is not documented; an exact count only makes the low end a little lower. A response without the
  headers empties the key: no budget announced, no pacing (as for one process).
- between responses, each request takes one token atomically (a Lua script, Redis's own clock): when that leaves
  fewer than ``reserve`` tokens, the taker is told how long to wait for them to come back, and its request is
  already counted, so the next taker queues behind it instead of racing it.
- nothing announced yet (no key) means no pacing, as for one process.

When Redis does not answer (``take`` returns None, ``observe`` False), the client paces from its own responses alone,
as before; Redis is tried again RECONNECT_SECONDS later, so an outage costs one bounded timeout per process, not
one per request. /healthz shows which way the budget is kept (portal.health).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from writeback.exchange.budget import Budget

logger = logging.getLogger(__name__)

# Every Redis call of the bucket gives up after this: a request to Exchange must not wait on a hung Redis.
TIMEOUT_SECONDS = 0.5
# After Redis failed to answer, this process paces alone for this long before asking Redis again.
RECONNECT_SECONDS = 15.0
KEY_PREFIX = "soa:exo-budget"

# KEYS[1] the bucket; ARGV[1] the requests to leave unspent. Returns the seconds to wait (a string: Redis would
# truncate a Lua number to an integer).
TAKE = """
local function num(x) return string.format('%.17g', x) end
local state = redis.call('HMGET', KEYS[1], 'limit', 'tokens', 'at', 'rate')
local limit, tokens, at, rate = tonumber(state[1]), tonumber(state[2]), tonumber(state[3]), tonumber(state[4])
if not limit or not tokens or not at then return '0' end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if rate and rate > 0 then tokens = math.min(limit, tokens + rate * math.max(0, now - at)) end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', num(tokens), 'at', num(now))
local reserve = math.min(tonumber(ARGV[1]), limit - 1)
if tokens >= reserve or not rate or rate <= 0 then return '0' end
return num((reserve - tokens) / rate)
"""

# KEYS[1] the bucket; ARGV limit, remaining, seconds until full (all '' when the response announced no budget).
OBSERVE = """
local function num(x) return string.format('%.17g', x) end
if ARGV[1] == '' then redis.call('DEL', KEYS[1]) return 0 end
local limit, remaining, full_in = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'rate', 'low', 'high')
local tokens, at, rate, low, high = tonumber(state[1]), tonumber(state[2]), tonumber(state[3]), tonumber(state[4]),
  tonumber(state[5])
if tokens and at and rate and rate > 0 then
  tokens = math.min(limit, remaining, tokens + rate * math.max(0, now - at))
else
  tokens = remaining
end
local missing = limit - remaining
if full_in > 0 and missing >= 1 then
  local new_low, new_high = (missing - 1) / full_in, missing / full_in
  if low and high and new_low <= high and new_high >= low then
    low, high = math.max(low, new_low), math.min(high, new_high)
  else
    low, high = new_low, new_high
  end
  rate = low
end
redis.call('HSET', KEYS[1], 'limit', num(limit), 'tokens', num(tokens), 'at', num(now))
if rate and rate > 0 then redis.call('HSET', KEYS[1], 'rate', num(rate), 'low', num(low), 'high', num(high)) end
local full_after = full_in
if rate and rate > 0 then full_after = math.max(full_in, (limit - tokens) / rate) end
redis.call('EXPIRE', KEYS[1], math.min(86400, math.ceil(full_after) + 1))
return 1
"""


def budget_key(tenant: str, client_id: str) -> str:
    """The bucket of one app in one tenant: what Exchange counts requests against."""
    return f"{KEY_PREFIX}:{tenant}:{client_id}"


class SharedBudget:
    """The Redis bucket of one tenant's app, as one process sees it. ``connect`` returns a Redis client whose calls
    time out; it is called again after a failure."""

    def __init__(self, connect: Callable[[], redis.Redis], key: str, *, clock: Callable[[], float] = time.monotonic):
        self.key = key
        self._connect = connect
        self._clock = clock
        self._client: redis.Redis | None = None
        self._scripts: tuple[Any, Any] | None = None
        self._down_until = 0.0
        self.shared = True  # False while this process paces alone (Redis did not answer)

    def take(self, *, reserve: int) -> float | None:
        """Take one request from the budget: seconds to wait before sending it, or None when Redis does not answer
        (pace from this process's own responses instead)."""
        result = self._call(0, [max(int(reserve), 0)])
        return None if result is None else max(float(result), 0.0)

    def observe(self, budget: Budget | None) -> bool:
        """Set the bucket from a response's budget (None: the response announced none). False when Redis does not
        answer."""
        if budget is None:
            arguments: list[Any] = ["", "", ""]
        else:
            arguments = [budget.limit, budget.remaining, repr(float(budget.full_in))]
        return self._call(1, arguments) is not None

    def state(self) -> dict[str, str]:
        """The bucket as stored (empty: no budget announced, or it is full again); raises redis.RedisError."""
        raw = self._redis().hgetall(self.key)
        return {key.decode(): value.decode() for key, value in raw.items()}

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = self._connect()
            self._scripts = (self._client.register_script(TAKE), self._client.register_script(OBSERVE))
        return self._client

    def _call(self, which: int, arguments: list[Any]) -> Any:
        if self._down_until and self._clock() < self._down_until:
            return None
        try:
            self._redis()
            result = self._scripts[which](keys=[self.key], args=arguments)
        except (redis.RedisError, OSError) as error:
            if self.shared:
                logger.warning("Exchange budget: Redis does not answer (%s); this process paces from its own "
                               "responses for %.0f s, then asks Redis again.", error.__class__.__name__,
                               RECONNECT_SECONDS)  # fmt: skip
            self.shared = False
            self._down_until = self._clock() + RECONNECT_SECONDS
            self._client, self._scripts = None, None
            return None
        if not self.shared:
            logger.warning("Exchange budget: Redis answers again; the budget is shared between processes again.")
        self.shared, self._down_until = True, 0.0
        return result


# One Redis client per process and queue configuration: a wave builds an Exchange client for each batch.
_clients: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def settings_connection() -> Callable[[], redis.Redis]:
    """Connects (once per process) to the Redis the workers take their jobs from, every call bounded in time."""
    from django.conf import settings

    from portal.redis_config import client_for

    queue = settings.RQ_QUEUES["default"]  # the server the workers take their jobs from

    def connect() -> redis.Redis:
        key = (os.getpid(), repr(sorted(queue.items())))
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = client_for(queue, timeout=TIMEOUT_SECONDS)
            return client

    return connect


def from_settings(tenant: str, client_id: str) -> SharedBudget:
    """The bucket of the configured tenant's app, on the Redis the queues use (portal.redis_config)."""
    return SharedBudget(settings_connection(), budget_key(tenant, client_id))


__all__ = ["RECONNECT_SECONDS", "SharedBudget", "budget_key", "from_settings", "settings_connection"]
