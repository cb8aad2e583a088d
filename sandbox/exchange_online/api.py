"""``POST /adminapi/beta/{tenant}/InvokeCommand``: authentication, throttling, faults, dispatch, envelope.

The body must be exactly ``{"CmdletInput": {"CmdletName": ..., "Parameters": {...}}}``. A success is
``{"@odata.context", "adminapi.warnings@odata.type", "@adminapi.warnings", "value", "@odata.nextLink"?}``
(exchange-facts §4.3); a failure is Exchange's error body (§4.4) with 400/401/403/404/429/5xx.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .app_roles import check_app_role
from .cmdlets import Cmdlets, Invocation, Result
from .config import Tenant
from .entra import DELEGATED_EXCHANGE_SCOPE, Entra, TokenRejected
from .errors import SERVER, THROTTLED, UNAUTHORIZED, ExchangeError, empty_server_error
from .faults import Faults
from .materials import MANAGE_AS_APP
from .organization import set_organization_config
from .set_mailbox import set_mailbox
from .throttle import Throttle
from .web import Request, Response, json_response

CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
WRITE_CMDLETS = {"set-mailbox", "set-organizationconfig"}
COLLECTION = "Collection(Exchange.GenericHashTable)"


class Counters:
    """What the emulator has served, for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.invoke_command = 0
            self.throttled = 0
            self.by_status: collections.Counter[int] = collections.Counter()
            self.by_cmdlet: collections.Counter[str] = collections.Counter()
            # Write cmdlets carried out (whatever was answered after): a request refused or failed before it ran is
            # in by_cmdlet, not here, so a test can tell a write applied twice from a write retried after a 5xx.
            self.carried_out: collections.Counter[str] = collections.Counter()

    def count(self, *, status: int, cmdlet: str | None = None, invoke: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[status] += 1
            if invoke:
                self.invoke_command += 1
            if status == 429:
                self.throttled += 1
            if cmdlet:
                self.by_cmdlet[cmdlet] += 1

    def count_carried_out(self, cmdlet: str) -> None:
        with self._lock:
            self.carried_out[cmdlet] += 1

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "invoke_command": self.invoke_command,
                "throttled": self.throttled,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_cmdlet": dict(sorted(self.by_cmdlet.items())),
                "carried_out": dict(sorted(self.carried_out.items())),
            }


class ExchangeApi:
    """The InvokeCommand endpoint of one tenant."""

    def __init__(
        self, *, entra: Entra, cmdlets: Cmdlets, throttle: Throttle, faults: Faults, tenant: Tenant, counters: Counters
    ) -> None:
        self.entra, self.cmdlets, self.throttle, self.faults = entra, cmdlets, throttle, faults
        self.tenant, self.counters = tenant, counters
        self._dispatch: dict[str, Callable[[Invocation], Result]] = {
            "get-mailbox": cmdlets.get_mailbox,
            "set-mailbox": lambda call: set_mailbox(cmdlets, call),
            "get-accepteddomain": cmdlets.get_accepted_domain,
            "get-organizationconfig": cmdlets.get_organization_config,
            "set-organizationconfig": lambda call: set_organization_config(cmdlets, call),
        }

    def handle(self, request: Request, tenant_in_path: str) -> Response:
        headers = {"request-id": str(uuid.uuid4())}
        if "client-request-id" in request.headers:
            headers["client-request-id"] = request.headers["client-request-id"]
        cmdlet = None
        try:
            claims = self._authenticate(request)
            if not self.tenant.matches(tenant_in_path):
                raise ExchangeError(
                    400,
                    UNAUTHORIZED,
                    f"The tenant '{tenant_in_path}' in the request URL is not the tenant of the access token.",
                )
            decision = self.throttle.take(claims.get("appid", ""))
            headers.update(decision.headers)
            if not decision.allowed:
                raise ExchangeError(
                    429, THROTTLED, f"The request was throttled. Retry after {decision.retry_after} seconds.",
                    message="Too many requests", headers={"Retry-After": str(decision.retry_after)},
                )  # fmt: skip
            call = self._invocation(request, tenant_in_path)
            cmdlet = call.cmdlet
            if MANAGE_AS_APP in (claims.get("roles") or []):  # app-only: the app's Entra role decides too
                check_app_role(self.cmdlets.settings.app_directory_roles, cmdlet, call.params, claims.get("appid", ""))
            latency = self.faults.latency_for(cmdlet)
            if latency > 0:
                time.sleep(latency)
            failure = self.faults.server_error()
            if failure is not None:
                raise ExchangeError(
                    failure,
                    SERVER,
                    "The service is temporarily unavailable. Please try again later.",
                    message="Server error",
                )
            handler = self._dispatch.get(cmdlet.lower())
            if handler is None:
                response = self._unknown_cmdlet(cmdlet)
                response.headers.update(headers)
                self.counters.count(status=403, cmdlet=cmdlet, invoke=True)
                return response
            result = handler(call)
            if cmdlet.lower() in WRITE_CMDLETS:
                self.counters.count_carried_out(cmdlet)
                if self.faults.take_error_after_apply():
                    raise empty_server_error()
        except ExchangeError as exc:
            self.counters.count(status=exc.status, cmdlet=cmdlet, invoke=True)
            return json_response(exc.status, exc.body(), headers={**headers, **exc.headers}, content_type=CONTENT_TYPE)
        headers.update(result.headers)
        payload: dict[str, Any] = {
            "@odata.context": f"{self.entra.base_url}/adminapi/beta/{tenant_in_path}/$metadata#{COLLECTION}",
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": result.warnings,
            "value": result.value,
        }
        if result.next_link:
            payload["@odata.nextLink"] = result.next_link
        self.counters.count(status=200, cmdlet=cmdlet, invoke=True)
        return json_response(200, payload, headers=headers, content_type=CONTENT_TYPE)

    def _authenticate(self, request: Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._unauthorized("The request has no bearer access token.")
        try:
            claims = self.entra.verify_access_token(token.strip())
        except TokenRejected as exc:
            raise self._unauthorized(str(exc)) from None
        if (
            MANAGE_AS_APP not in (claims.get("roles") or [])
            and DELEGATED_EXCHANGE_SCOPE not in claims.get("scp", "").split()
        ):
            raise ExchangeError(
                403,
                UNAUTHORIZED,
                f"The application '{claims.get('appid')}' has no permission to call the Exchange admin API: its token "
                f"carries neither the {MANAGE_AS_APP} role nor the {DELEGATED_EXCHANGE_SCOPE} scope.",
                message="Access denied",
            )
        return claims

    def _unauthorized(self, reason: str) -> ExchangeError:
        challenge = (
            'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
            f'authorization_uri="{self.entra.authority}/oauth2/authorize", error="invalid_token", '
            f'error_description="{reason}"'
        )
        return ExchangeError(401, UNAUTHORIZED, reason, message="Unauthorized", headers={"WWW-Authenticate": challenge})

    @staticmethod
    def _invocation(request: Request, tenant_in_path: str) -> Invocation:
        def malformed(reason: str) -> ExchangeError:
            return ExchangeError(
                400, "Microsoft.OData.ODataException", f"The request body is not valid: {reason}", message="Bad request"
            )

        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            raise malformed("it is not JSON.") from None
        if not isinstance(body, dict) or set(body) != {"CmdletInput"} or not isinstance(body["CmdletInput"], dict):
            raise malformed('expected exactly {"CmdletInput": {"CmdletName": ..., "Parameters": {...}}}.')
        cmdlet_input = body["CmdletInput"]
        if set(cmdlet_input) - {"CmdletName", "Parameters"}:
            raise malformed(f"unexpected CmdletInput keys {sorted(set(cmdlet_input) - {'CmdletName', 'Parameters'})}.")
        name = cmdlet_input.get("CmdletName")
        params = cmdlet_input.get("Parameters", {})
        if not isinstance(name, str) or not name or not isinstance(params, dict):
            raise malformed("CmdletName must be a string and Parameters an object.")
        return Invocation(cmdlet=name, params=params, request=request, tenant_in_path=tenant_in_path)

    def _unknown_cmdlet(self, cmdlet: str) -> Response:
        # Measured on EXO (exchange-facts §4.4): 403 with a body of NUL bytes labelled gzip.
        if self.cmdlets.settings.unknown_cmdlet_body == "nul-gzip":
            return Response(403, b"\x00" * 32, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        error = ExchangeError(403, UNAUTHORIZED, f"The term '{cmdlet}' is not recognized as a cmdlet you can run.")
        return json_response(403, error.body(), content_type=CONTENT_TYPE)
