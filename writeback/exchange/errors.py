"""Exchange Online admin API errors, mapped from HTTP status and the documented error body.

An error body looks like ``{"error": {"code", "message", "details": [{"message": "ExCode|ExceptionType|text"}],
"innererror": {"internalexception": {"message"}}}}``. The human text is taken from ``details[].message``, then
``innererror.internalexception.message``, then ``error.message``, the order real clients use.
"""

import datetime as dt
import email.utils
from typing import Any

import requests

# The write-scope refusal for a dir-synced mailbox that is not cloud-managed says this (exchange-facts §5).
_WRITE_SCOPE_MARKERS = ("out of the current user's write scope", "being synchronized from your on-premises")


class ExchangeOnlineError(Exception):
    """A cmdlet failed. Carries what Exchange said, so the person reading it can act."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        ex_code: str = "",
        exception_type: str = "",
        cmdlet: str = "",
        identity: str = "",
        request_id: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.ex_code = ex_code
        self.exception_type = exception_type
        self.cmdlet = cmdlet
        self.identity = identity
        self.request_id = request_id

    def __str__(self) -> str:
        where = f"{self.cmdlet} {self.identity}".strip()
        return f"{where}: {self.message}" if where else self.message


class ExoNotFound(ExchangeOnlineError):
    """The object does not exist (or is not visible yet: Exchange replicates new objects with a delay)."""


class ExoInvalidParameter(ExchangeOnlineError):
    """Exchange rejected a parameter or its value (syntax, domain, uniqueness, length...)."""


class ExoWriteScope(ExchangeOnlineError):
    """The mailbox's Exchange attributes are still mastered on-premises; edit them in AD or flip its authority."""


class ExoAuthError(ExchangeOnlineError):
    """No token could be obtained, or the token was refused (credentials, consent, Exchange.ManageAsApp, role)."""


class ExoInsecureUrl(ExchangeOnlineError):
    """A configured Exchange, Graph or sign-in URL is not https: no token or credential may be sent to it."""


class ExoThrottled(ExchangeOnlineError):
    """429: the budget is spent; ``retry_after`` says for how many seconds (None when Exchange did not say)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ExoTransient(ExchangeOnlineError):
    """5xx, timeout or a broken connection: worth retrying, and the change may or may not have been applied.

    ``retry_after``: the seconds a 503's ``Retry-After`` asked for (None when it gave none)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ExoRetryLater(ExchangeOnlineError):
    """Exchange asked for a longer wait (``Retry-After``) than the client may spend inside one call.

    The caller should put the work down and come back at ``retry_at`` (UTC) rather than hold its worker; the
    last error (429 or 503) is ``cause``."""

    retryable = True

    def __init__(self, message: str, *, retry_at: dt.datetime, cause: ExchangeOnlineError, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_at = retry_at
        self.cause = cause


class ExoVerificationFailed(ExchangeOnlineError):
    """The cmdlet reported success (or an ambiguous failure) but re-reading the mailbox shows another state."""


def parse_error_body(response: requests.Response) -> tuple[str, str, str, str]:
    """Return (code, ex_code, exception_type, message) from an error response, whatever its shape."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or "")
    for detail in error.get("details") or []:
        text = str((detail or {}).get("message") or "")
        if text:
            parts = text.split("|", 2)
            if len(parts) == 3:
                return code, parts[0], parts[1], parts[2]
            return code, "", "", text
    inner = error.get("innererror") or {}
    internal = inner.get("internalexception") or inner.get("internalException") or {}
    message = internal.get("message") or error.get("message") or ""
    if not message:
        message = f"HTTP {response.status_code} with no error message"
    return code, "", "", str(message)


def _http_date(value: str) -> dt.datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def retry_after_seconds(response: requests.Response, *, now: dt.datetime | None = None) -> float | None:
    """Seconds ``Retry-After`` asks for, in either of its forms (RFC 9110 §10.2.3): delay-seconds, or an
    HTTP-date. A date is measured from the response's own ``Date`` when it has one, so that a clock skew between
    this host and Exchange does not stretch or cut the wait; a date already past means "now". None when absent
    or unreadable."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    retry_at = _http_date(value)
    if retry_at is None:
        return None
    reference = _http_date(response.headers.get("Date") or "") or now or dt.datetime.now(dt.UTC)
    return max(0.0, (retry_at - reference).total_seconds())


def error_for_response(
    response: requests.Response, *, cmdlet: str, identity: str, request_id: str
) -> ExchangeOnlineError:
    """Map a non-2xx response to the matching typed error."""
    code, ex_code, exception_type, message = parse_error_body(response)
    kwargs = dict(
        status=response.status_code,
        code=code,
        ex_code=ex_code,
        exception_type=exception_type,
        cmdlet=cmdlet,
        identity=identity,
        request_id=request_id,
    )
    status = response.status_code
    if status == 429:
        return ExoThrottled(message, retry_after=retry_after_seconds(response), **kwargs)
    if status == 503:
        return ExoTransient(message, retry_after=retry_after_seconds(response), **kwargs)
    if status >= 500:
        return ExoTransient(message, **kwargs)
    if status in (401, 403) and not any(marker in message for marker in _WRITE_SCOPE_MARKERS):
        return ExoAuthError(message, **kwargs)
    if any(marker in message for marker in _WRITE_SCOPE_MARKERS):
        return ExoWriteScope(message, **kwargs)
    if status == 404 or exception_type.endswith("ManagementObjectNotFoundException"):
        return ExoNotFound(message, **kwargs)
    if status == 400:
        return ExoInvalidParameter(message, **kwargs)
    return ExchangeOnlineError(message, **kwargs)
