"""Error bodies in the shapes the real services use.

Exchange (exchange-facts §4.4): ``{"error": {"code", "message", "details": [{"code", "target", "message":
"ExCode|ExceptionType|text"}], "innererror": {...}}}`` with a generic ``error.message`` and the real reason
in ``details``. Entra (OAuth 2.0 plus Entra's extras): ``{"error", "error_description", "error_codes",
"timestamp", "trace_id", "correlation_id", "error_uri"}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}

# Exchange exception types the emulator raises.
NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
AMBIGUOUS = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException"
PARAMETER_BINDING = "System.Management.Automation.ParameterBindingException"
DATA_VALIDATION = "Microsoft.Exchange.Data.DataValidationException"
NOT_ACCEPTED_DOMAIN = "Microsoft.Exchange.Configuration.Tasks.NotAcceptedDomainException"
PROXY_IN_USE = "Microsoft.Exchange.Management.Tasks.ProxyAddressExistsException"
RECIPIENT_TASK = "Microsoft.Exchange.Management.Tasks.RecipientTaskException"
INVALID_OPERATION = "System.InvalidOperationException"
UNAUTHORIZED = "System.UnauthorizedAccessException"
THROTTLED = "Microsoft.Exchange.Admin.OData.Core.ThrottlingException"
SERVER = "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"

# The one error code the reference quotes; the others are made up, stable per exception type.
_KNOWN_CODES = {NOT_FOUND: "Ex6F9304"}


def ex_code(exception_type: str) -> str:
    if exception_type in _KNOWN_CODES:
        return _KNOWN_CODES[exception_type]
    return "Ex" + hashlib.sha256(exception_type.encode()).hexdigest()[:6].upper()


class ExchangeError(Exception):
    """A cmdlet or API failure, rendered as Exchange's error body with the given HTTP status."""

    def __init__(
        self,
        status: int,
        exception_type: str,
        text: str,
        *,
        code: str | None = None,
        message: str = "Error executing cmdlet",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(text)
        self.status = status
        self.exception_type = exception_type
        self.text = text
        # None: a made-up stable code; "": no code, as in the write-scope error seen in the field.
        self.code = ex_code(exception_type) if code is None else code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        detail = f"{self.code}|{self.exception_type}|{self.text}" if self.exception_type else ""
        return {
            "error": {
                "code": HTTP_CODES.get(self.status, str(self.status)),
                "message": self.message,
                "details": [{"code": "Client" if self.status < 500 else "Server", "target": "", "message": detail}],
                "innererror": {
                    "message": self.message,
                    "type": SERVER,
                    "stacktrace": "",
                    "internalexception": {
                        "message": self.text,
                        "type": "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException",
                        "stacktrace": "",
                    },
                },
            }
        }


def not_found(identity: str, server: str) -> ExchangeError:
    return ExchangeError(
        404,
        NOT_FOUND,
        f"The operation couldn't be performed because object '{identity}' couldn't be found on '{server}'.",
    )


def bad_parameter(text: str, exception_type: str = PARAMETER_BINDING) -> ExchangeError:
    return ExchangeError(400, exception_type, text)


def empty_server_error() -> ExchangeError:
    """The silent-success trap (exchange-facts §4.3): a failure with an empty message after the write."""
    return ExchangeError(500, "", "", code="", message="")


class OAuthError(Exception):
    """An Entra token-endpoint error: OAuth ``error`` plus an AADSTS code and text."""

    def __init__(self, status: int, error: str, aadsts: int, text: str) -> None:
        super().__init__(text)
        self.status, self.error, self.aadsts, self.text = status, error, aadsts, text

    def body(self, *, base_url: str, correlation_id: str | None) -> dict[str, Any]:
        trace_id = str(uuid.uuid4())
        correlation_id = correlation_id or str(uuid.uuid4())
        now = dt.datetime.now(dt.UTC)
        return {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.aadsts}: {self.text} Trace ID: {trace_id} Correlation ID: {correlation_id} "
                f"Timestamp: {now:%Y-%m-%d %H:%M:%S}Z"
            ),
            "error_codes": [self.aadsts],
            "timestamp": f"{now:%Y-%m-%d %H:%M:%S}Z",
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{base_url}/error?code={self.aadsts}",
        }
