"""Exchange Online's admin API (the REST endpoint behind the EXO PowerShell module), app-only through msal.

Every cmdlet is ``POST {base}/adminapi/beta/{tenant}/InvokeCommand`` with ``{"CmdletInput": {"CmdletName",
"Parameters"}}`` and a bearer token for ``https://outlook.office365.com/.default``. The client pages through
``@odata.nextLink`` (re-posting the same body), paces itself from the ``Rate-Limit-*`` headers so that a steady caller
stays within its budget (writeback/exchange/budget.py; the budget every worker process shares in Redis when the
configuration asks for it, writeback/exchange/shared_budget.py), retries throttling (honouring ``Retry-After``) and
transient failures (bounded exponential backoff with jitter), surfaces ``@adminapi.warnings``, and can confirm a write
by re-reading the mailbox, because a cmdlet may fail after having applied its change (exchange-facts §4).

Tokens and secrets never reach a log line: the log says cmdlet, identity, status, duration, attempt and the
``client-request-id`` sent with the call.
"""

import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from soa.attributes import EXCHANGE_ATTRIBUTES, IDENTITY_ATTRIBUTES
from writeback.exchange import shared_budget
from writeback.exchange.auth import ExchangeConfig, TokenProvider, build_session, require_https
from writeback.exchange.budget import Budget, read_budget
from writeback.exchange.errors import (
    ExchangeOnlineError,
    ExoAuthError,
    ExoRetryLater,
    ExoThrottled,
    ExoTransient,
    ExoVerificationFailed,
    error_for_response,
)
from writeback.exchange.verify import (
    check_address_change,
    encode_parameter,
    missing_tenant_addresses,
    state_matches,
    tenant_addresses,
)

logger = logging.getLogger(__name__)

# Parameters set_mailbox() accepts: the Exchange attributes the portal manages plus the authority flag.
SETTABLE = frozenset(
    {"EmailAddresses", "WindowsEmailAddress", "HiddenFromAddressListsEnabled", "IsExchangeCloudManaged"}
    | {f"CustomAttribute{i}" for i in range(1, 16)}
    | {f"ExtensionCustomAttribute{i}" for i in range(1, 6)}
)
NO_CHANGE_WARNING = "no settings of"
# What the portal reads from a Get-Mailbox object: the mapped Exchange and identity attributes (soa.attributes,
# consumed by soa.values), the keys the inventory pairs and dates on, and what a flip checks. Real objects
# carry 200+ properties and a page holds 1,000 of them (exchange-facts §7.4); everything else, OData annotations
# included, is dropped from each object as its page is read, so a tenant-wide read holds one raw page at a time.
MAILBOX_PROPERTIES = frozenset(
    {attribute.exo for attribute in (*EXCHANGE_ATTRIBUTES, *IDENTITY_ATTRIBUTES)}
    | {
        "ExternalDirectoryObjectId",
        "IsDirSynced",
        "IsExchangeCloudManaged",
        "PrimarySmtpAddress",
        "WindowsEmailAddress",
        "RecipientTypeDetails",
        "WhenChangedUTC",
        "Identity",
        "Name",
        "Guid",
        "ExchangeGuid",
    }
)


def project_mailbox(mailbox: dict[str, Any]) -> dict[str, Any]:
    """One Get-Mailbox object cut down to MAILBOX_PROPERTIES."""
    return {name: value for name, value in mailbox.items() if name in MAILBOX_PROPERTIES}


# Cmdlets whose objects are cut down as they are read.
_PROJECTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"Get-Mailbox": project_mailbox}


@dataclass
class CmdletResult:
    """What one cmdlet returned: its objects (all pages) and the warnings Exchange attached."""

    values: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class SetResult:
    """Outcome of set_mailbox: ``changed`` is False when Exchange said nothing was modified."""

    changed: bool
    warnings: list[str]
    mailbox: dict[str, Any] | None = None  # the re-read mailbox when verify=True


class ExchangeOnlineClient:
    """Typed access to the cmdlets the portal uses. One instance per worker; it pools connections and tokens."""

    def __init__(
        self,
        config: ExchangeConfig,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        shared: shared_budget.SharedBudget | None = None,
    ):
        require_https(config)  # before any session exists, so no token can ever go out over http
        self.config = config
        self.session = session or build_session(config)
        self.tokens = TokenProvider(config, self.session)
        self._sleep = sleep
        self._endpoint = f"{config.base_url.rstrip('/')}/adminapi/beta/{config.tenant}/InvokeCommand"
        self._origin = urlsplit(config.base_url)[:2]
        self.budget: Budget | None = None  # the rate-limit budget of the last response (None: it sent none)
        # The budget shared with every other process (None: this process paces alone).
        if shared is None and config.shared_budget:
            shared = shared_budget.from_settings(config.tenant, config.client_id)
        self.shared = shared

    # -- typed cmdlets ---------------------------------------------------------------------------------------

    def get_mailbox(self, identity: str) -> dict[str, Any]:
        result = self.invoke("Get-Mailbox", {"Identity": identity}, identity=identity)
        if not result.values:
            raise ExchangeOnlineError(f"Get-Mailbox returned no object for {identity}.", cmdlet="Get-Mailbox")
        return result.values[0]

    def iter_mailboxes(self, *, filter: str | None = None, page_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every mailbox matching the OPATH ``filter``, streamed page by page (memory stays flat)."""
        parameters: dict[str, Any] = {"ResultSize": "Unlimited"}
        if filter:
            parameters["Filter"] = filter
        for page in self.iter_pages("Get-Mailbox", parameters, page_size=page_size):
            yield from page

    def get_accepted_domains(self) -> list[dict[str, Any]]:
        return self.invoke("Get-AcceptedDomain", {}).values

    def get_organization_config(self) -> dict[str, Any]:
        values = self.invoke("Get-OrganizationConfig", {}).values
        return values[0] if values else {}

    def set_organization_config(self, **switches: bool) -> CmdletResult:
        """Set-OrganizationConfig with SwitchParameters (``ExchangeAttributesCloudManagedByDefault=True``): a switch is
        sent as true; Exchange has no way to send one as "not present" but leaving it out."""
        if not switches or not all(value is True for value in switches.values()):
            raise ValueError("set_organization_config takes switches, each True.")
        return self.invoke("Set-OrganizationConfig", dict(switches))

    def set_mailbox(self, identity: str, *, verify: bool = False, **params: Any) -> SetResult:
        """Set Exchange attributes of one mailbox; with ``verify``, return only once a re-read shows them.

        ``EmailAddresses`` takes only ``{"Add": [...], "Remove": [...]}`` (never a full list, which would drop what
        it leaves out), never removes the tenant's MOERA or routing address, and no value longer than AD's
        proxyAddresses limit (writeback.exchange.verify); a change to it is checked against a fresh read, so the
        verification also notices a tenant address that went missing. ``ExtensionCustomAttributeN`` takes a full
        list or a change. The call is safe to retry: after an ambiguous failure the mailbox is re-read and, when it
        already holds the intended state, nothing is sent again.
        """
        unknown = set(params) - SETTABLE
        if unknown:
            raise ValueError(f"set_mailbox does not handle {', '.join(sorted(unknown))}.")
        if not params:
            raise ValueError("set_mailbox needs at least one parameter to set.")
        for name, value in params.items():
            check_address_change(name, value)
        keep: set[tuple[str, str]] = set()
        if "EmailAddresses" in params or "WindowsEmailAddress" in params:
            keep = tenant_addresses(self.get_mailbox(identity).get("EmailAddresses") or [])
        parameters = {"Identity": identity} | {name: encode_parameter(name, value) for name, value in params.items()}

        def already_applied() -> bool:
            return state_matches(self.get_mailbox(identity), params, keep=keep)

        result = self.invoke("Set-Mailbox", parameters, identity=identity, recheck=already_applied)
        changed = not any(NO_CHANGE_WARNING in warning for warning in result.warnings)
        if not verify:
            return SetResult(changed=changed, warnings=result.warnings)
        mailbox = self._confirm(identity, params, keep)
        return SetResult(changed=changed, warnings=result.warnings, mailbox=mailbox)

    def _confirm(self, identity: str, params: dict[str, Any], keep: set[tuple[str, str]]) -> dict[str, Any]:
        mailbox: dict[str, Any] = {}
        for attempt in range(1, self.config.verify_attempts + 1):
            mailbox = self.get_mailbox(identity)
            if state_matches(mailbox, params, keep=keep):
                return mailbox
            if attempt < self.config.verify_attempts:
                self._sleep(self.config.verify_delay)
        missing = missing_tenant_addresses(mailbox, keep)
        lost = f"; the tenant address(es) {', '.join(missing)} are gone from it" if missing else ""
        raise ExoVerificationFailed(
            f"Set-Mailbox reported success but {identity} does not show the intended values "
            f"{sorted(params)} after {self.config.verify_attempts} reads{lost}.",
            cmdlet="Set-Mailbox",
            identity=identity,
        )

    # -- the wire --------------------------------------------------------------------------------------------

    def invoke(
        self,
        cmdlet: str,
        parameters: dict[str, Any],
        *,
        identity: str = "",
        page_size: int | None = None,
        recheck: Callable[[], bool] | None = None,
    ) -> CmdletResult:
        """Run one cmdlet and collect every page of its result."""
        result = CmdletResult()
        for page in self.iter_pages(
            cmdlet, parameters, identity=identity, page_size=page_size, recheck=recheck, warnings=result.warnings
        ):
            result.values.extend(page)
        return result

    def iter_pages(
        self,
        cmdlet: str,
        parameters: dict[str, Any],
        *,
        identity: str = "",
        page_size: int | None = None,
        recheck: Callable[[], bool] | None = None,
        warnings: list[str] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the cmdlet's result one page at a time, following ``@odata.nextLink`` with the same body.

        Get-Mailbox objects come cut down to MAILBOX_PROPERTIES; the raw page is let go before the page is yielded."""
        project = _PROJECTIONS.get(cmdlet)
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}}
        url = self._endpoint
        size = page_size or self.config.page_size
        while url:
            payload = self._post(url, body, cmdlet=cmdlet, identity=identity, page_size=size, recheck=recheck)
            if payload is None:  # a write found already applied after an ambiguous failure
                return
            page_warnings = [str(w) for w in payload.get("@adminapi.warnings") or []]
            for warning in page_warnings:
                logger.warning("Exchange warning for %s %s: %s", cmdlet, identity, warning)
            if warnings is not None:
                warnings.extend(page_warnings)
            errors = payload.get("@adminapi.errors") or []
            if errors:
                raise ExchangeOnlineError(
                    "; ".join(str(e.get("message", e) if isinstance(e, dict) else e) for e in errors),
                    cmdlet=cmdlet,
                    identity=identity,
                )
            url = payload.get("@odata.nextLink")
            values = payload.get("value") or []
            page = [project(item) for item in values] if project else list(values)
            del payload, values  # the raw page (all 200+ properties of each object) is not kept while the caller works
            yield page
            if url and urlsplit(url)[:2] != self._origin:
                # The bearer token must never travel to a host other than the configured one.
                raise ExchangeOnlineError(f"Refusing to follow a nextLink to another host: {urlsplit(url).netloc}")

    def _headers(self, cmdlet: str, request_id: str, page_size: int) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.tokens.token()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Prefer": f"odata.maxpagesize={page_size}",
            "X-CmdletName": cmdlet,
            "X-ResponseFormat": "json",
            "client-request-id": request_id,
            "return-client-request-id": "true",
        }
        if self.config.anchor_mailbox:
            headers["X-AnchorMailbox"] = self.config.anchor_mailbox
        return headers

    def _post(
        self,
        url: str,
        body: dict[str, Any],
        *,
        cmdlet: str,
        identity: str,
        page_size: int,
        recheck: Callable[[], bool] | None,
    ) -> dict[str, Any] | None:
        refreshed_token = False
        attempt = 0
        while True:
            attempt += 1
            request_id = str(uuid.uuid4())
            self._pace(cmdlet)
            started = time.perf_counter()
            status: int | str
            try:
                response = self.session.post(
                    url,
                    json=body,
                    headers=self._headers(cmdlet, request_id, page_size),
                    timeout=(self.config.connect_timeout, self.config.timeout),
                )
                status = response.status_code
                self.budget = read_budget(response.headers, now=dt.datetime.now(dt.UTC), seen=time.monotonic())
                if self.shared is not None and self.config.pace:
                    self.shared.observe(self.budget)
            except requests.exceptions.ContentDecodingError:
                # What Exchange sends for a cmdlet it does not know: 403 with NUL bytes labelled gzip (§4.4).
                response, status = None, "undecodable"
                error = ExchangeOnlineError(
                    f"Exchange Online refused {cmdlet} with an unreadable body: the cmdlet is unknown or not "
                    "allowed for this application.",
                    status=403,  # the status Exchange sent; its body is what could not be read
                    cmdlet=cmdlet,
                    identity=identity,
                    request_id=request_id,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                response, status = None, exc.__class__.__name__
                error: ExchangeOnlineError | None = ExoTransient(
                    f"No answer from Exchange Online: {exc.__class__.__name__}",
                    cmdlet=cmdlet,
                    identity=identity,
                    request_id=request_id,
                )
            else:
                error = None
                if not response.ok:
                    error = error_for_response(response, cmdlet=cmdlet, identity=identity, request_id=request_id)
            logger.info(
                "EXO %s identity=%s status=%s ms=%.0f attempt=%d request_id=%s",
                cmdlet, identity or "-", status, (time.perf_counter() - started) * 1000, attempt, request_id,
            )  # fmt: skip
            if error is None:
                try:
                    return response.json()
                except ValueError:
                    error = ExoTransient("Exchange Online answered with a body that is not JSON.", cmdlet=cmdlet)
            if isinstance(error, ExoAuthError) and error.status == 401 and not refreshed_token:
                # The cached token may have been revoked or expired early: get a fresh one, once.
                self.tokens.invalidate()
                refreshed_token = True
                continue
            if not error.retryable or attempt >= self.config.max_attempts:
                raise error
            if recheck is not None and not isinstance(error, ExoThrottled) and recheck():
                logger.info("EXO %s identity=%s already applied after %s; not resent", cmdlet, identity, status)
                return None
            self._sleep(self._delay(error, attempt))

    def _pace(self, cmdlet: str) -> None:
        """Before a request: take it from the shared budget and wait as long as that says; without one (or while
        Redis does not answer), wait when this process's last response left the budget at the reserve."""
        if not self.config.pace:
            return
        if self.shared is not None:
            delay = self.shared.take(reserve=self.config.pace_reserve)
            if delay is not None:
                if delay > 0:
                    logger.debug("EXO %s paced %.3f s by the shared budget", cmdlet, delay)
                    self._sleep(min(delay, max(self.config.max_retry_after, 0.0)))
                return
        if self.budget is None:
            return
        delay = self.budget.wait(
            time.monotonic(), reserve=self.config.pace_reserve, ceiling=self.config.max_retry_after
        )
        if delay > 0:
            logger.debug("EXO %s paced %.3f s: %d of %d requests left", cmdlet, delay, self.budget.remaining,
                         self.budget.limit)  # fmt: skip
            self._sleep(delay)

    def _delay(self, error: ExchangeOnlineError, attempt: int) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            if retry_after > self.config.max_retry_after:
                # Waiting less than asked would only earn another refusal, and waiting here would hold a worker
                # for minutes: hand the wait to the caller, which can reschedule its job.
                retry_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=retry_after)
                raise ExoRetryLater(
                    f"Exchange Online asked to retry after {retry_after:.0f} s (at {retry_at:%Y-%m-%d %H:%M:%S} UTC), "
                    f"longer than this client waits in one call ({self.config.max_retry_after:.0f} s). "
                    f"Last answer: {error.message}",
                    retry_at=retry_at,
                    cause=error,
                    status=error.status,
                    code=error.code,
                    cmdlet=error.cmdlet,
                    identity=error.identity,
                    request_id=error.request_id,
                )
            return retry_after
        ceiling = min(self.config.backoff_max, self.config.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security
