"""The Exchange Online client and the Graph reads beside it: the names the rest of the portal uses.

``client`` holds ``ExchangeOnlineClient`` (cmdlets over the admin API), ``auth`` the configuration and msal tokens,
``errors`` the typed failures, ``budget`` the pacing from the Rate-Limit headers, ``verify`` the confirming
re-read, ``graph`` the Graph /v1.0/users reads the inventory pairs with (same app registration, tokens and
session as the admin API, so it lives here). The table of Microsoft clouds is ``portal.clouds``, because the
settings read it.
"""

from writeback.exchange.auth import ExchangeConfig
from writeback.exchange.client import CmdletResult, ExchangeOnlineClient, SetResult
from writeback.exchange.errors import (
    ExchangeOnlineError,
    ExoAuthError,
    ExoInsecureUrl,
    ExoInvalidParameter,
    ExoNotFound,
    ExoRetryLater,
    ExoThrottled,
    ExoTransient,
    ExoVerificationFailed,
    ExoWriteScope,
)
from writeback.exchange.graph import GraphClient, GraphError

__all__ = [
    "CmdletResult",
    "ExchangeConfig",
    "ExchangeOnlineClient",
    "ExchangeOnlineError",
    "ExoAuthError",
    "ExoInsecureUrl",
    "ExoInvalidParameter",
    "ExoNotFound",
    "ExoRetryLater",
    "ExoThrottled",
    "ExoTransient",
    "ExoVerificationFailed",
    "ExoWriteScope",
    "GraphClient",
    "GraphError",
    "SetResult",
]
