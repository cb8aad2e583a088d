"""Microsoft Graph, read-only and app-only: the Entra users that Entra Connect made from AD users, and the
organization's on-premises sync properties (the readiness page's prerequisites).

The inventory needs one thing from Graph: which Entra object each AD user became. Graph's user carries
``onPremisesImmutableId`` (the sourceAnchor: base64 of the AD anchor attribute) and ``id`` (the object id that
Exchange shows as ``ExternalDirectoryObjectId``), exchange-facts §8. ``GET /v1.0/users?$select=...`` pages through
``@odata.nextLink``; the app needs the application permission User.Read.All and a token for Graph's scope from
the same msal application as Exchange.

Throttling (429, 503) honours ``Retry-After``; other 5xx and network errors are retried with bounded backoff; a
401 gets one fresh token. The bearer token only ever goes to the configured Graph host over HTTPS.
"""

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from writeback.exchange.auth import ExchangeConfig, TokenProvider, build_session

logger = logging.getLogger(__name__)

# What pairing reads of a user (Graph returns only these with $select, which keeps a page small).
PAIRING_SELECT = ("id", "userPrincipalName", "onPremisesImmutableId", "onPremisesDistinguishedName")
# What the readiness page's prerequisites read of the organization (soa.prerequisites).
ORGANIZATION_SELECT = ("id", "displayName", "onPremisesSyncEnabled", "onPremisesLastSyncDateTime")
MAX_PAGE_SIZE = 999  # Graph's ceiling for $top on /users
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class GraphError(Exception):
    """A Graph call failed; ``retryable`` says whether trying again later may help."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "", retryable: bool = False):
        super().__init__(message)
        self.status, self.code, self.retryable = status, code, retryable


def _error(response: requests.Response, permission: str = "User.Read.All") -> GraphError:
    code, message = "", response.reason or ""
    try:
        body = response.json().get("error") or {}
        code, message = str(body.get("code") or ""), str(body.get("message") or message)
    except (ValueError, AttributeError):
        pass
    hint = ""
    if response.status_code == 403:
        hint = f" The application needs Graph's {permission} application permission, with admin consent."
    return GraphError(
        f"Microsoft Graph answered {response.status_code} {code}: {message.rstrip('.')}.{hint}",
        status=response.status_code,
        code=code,
        retryable=response.status_code in _RETRYABLE,
    )


def _retry_after(response: requests.Response | None) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"])) if response is not None else None
    except (KeyError, ValueError):
        return None


class GraphClient:
    """Pages of Entra users. One instance per job; it pools its connection and caches its token."""

    def __init__(
        self,
        config: ExchangeConfig,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if urlsplit(config.graph_base_url).scheme != "https":
            raise GraphError(f"GRAPH_BASE_URL must be an https:// URL, not {config.graph_base_url!r}.")
        self.config = config
        self.session = session or build_session(config)
        self.tokens = TokenProvider(config, self.session, scope=config.graph_scope)
        self._sleep = sleep
        self._base = config.graph_base_url.rstrip("/")
        self._origin = urlsplit(self._base)[:2]

    def iter_user_pages(
        self, *, select: tuple[str, ...] = PAIRING_SELECT, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[list[dict[str, Any]]]:
        """Every user of the tenant, one page at a time (memory stays flat)."""
        url: str | None = f"{self._base}/v1.0/users"
        params: dict[str, Any] | None = {"$select": ",".join(select), "$top": min(page_size, MAX_PAGE_SIZE)}
        while url:
            payload = self._get(url, params)
            yield list(payload.get("value") or [])
            url, params = payload.get("@odata.nextLink"), None  # the link carries the query and the skip token
            if url and urlsplit(url)[:2] != self._origin:
                raise GraphError(f"Refusing to follow a nextLink to another host: {urlsplit(url).netloc}")

    def organization(self) -> dict[str, Any]:
        """The tenant's organization object with its on-premises sync properties (``GET /v1.0/organization``; Learn
        "List organization": application permission Organization.Read.All). Empty when Graph lists none."""
        payload = self._get(
            f"{self._base}/v1.0/organization", {"$select": ",".join(ORGANIZATION_SELECT)},
            permission="Organization.Read.All",
        )  # fmt: skip
        values = payload.get("value") or []
        return dict(values[0]) if values else {}

    def _get(self, url: str, params: dict[str, Any] | None, *, permission: str = "User.Read.All") -> dict[str, Any]:
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            request_id = str(uuid.uuid4())
            started = time.perf_counter()
            response: requests.Response | None = None
            try:
                response = self.session.get(
                    url,
                    params=params,
                    headers={
                        "Authorization": f"Bearer {self.tokens.token()}",
                        "Accept": "application/json",
                        "client-request-id": request_id,
                    },
                    timeout=(self.config.connect_timeout, self.config.timeout),
                )
                error = None if response.ok else _error(response, permission)
                status: int | str = response.status_code
            except (requests.Timeout, requests.ConnectionError) as exc:
                error = GraphError(f"No answer from Microsoft Graph: {exc.__class__.__name__}", retryable=True)
                status = exc.__class__.__name__
            logger.info(
                "Graph GET %s status=%s ms=%.0f attempt=%d request_id=%s",
                urlsplit(url).path, status, (time.perf_counter() - started) * 1000, attempt, request_id,
            )  # fmt: skip
            if error is None:
                try:
                    return response.json()
                except ValueError:
                    error = GraphError("Microsoft Graph answered with a body that is not JSON.", retryable=True)
            if error.status == 401 and not refreshed:
                self.tokens.invalidate()  # revoked or expired early: one fresh token, then give up
                refreshed = True
                continue
            if not error.retryable or attempt >= self.config.max_attempts:
                raise error
            wait = _retry_after(response)
            if wait is None:
                ceiling = min(self.config.backoff_max, self.config.backoff_base * (2 ** (attempt - 1)))
                wait = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security
            self._sleep(min(wait, self.config.max_retry_after))
