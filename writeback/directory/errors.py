"""Directory errors: LDAP result codes and ldap3 exceptions mapped to what a job should do next.

A job retries a ``DirectoryRetryable`` with backoff (the server was busy, unavailable, too slow, or the
connection broke) and marks its task failed on a ``DirectoryPermanent`` (the request itself is wrong or not
allowed, and sending it again changes nothing). Every message names the operation, the LDAP result code by
name and number and the server's diagnostic message, which is what an administrator searches for ("0000202B:
RefErr", "modify breaks constraint on extensionAttribute1"). Passwords never appear: messages are built from
the server's result and the exception text, neither of which carries the bind password.
"""

from collections.abc import Mapping
from typing import Any

from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPResponseTimeoutError

# Worth sending again later, possibly to another domain controller. The client-side codes (81-91) are what
# ldap3 reports when it synthesises a result for a broken connection.
RETRYABLE_CODES = frozenset({3, 51, 52, 81, 85, 91})
# The entry no longer holds what the request assumed: a value to add is already there, one to delete is gone.
# Re-read and re-plan (apply_desired does); sending the same request again fails the same way.
CONFLICT_CODES = frozenset({16, 20})
NOT_FOUND_CODES = frozenset({32})
# Deliberately permanent although they may look transient:
# - 53 unwillingToPerform: AD answers it for policy refusals (password rules, system-only attributes,
#   "WILL_NOT_PERFORM" problems) that never succeed on a retry;
# - 11 adminLimitExceeded: the same request meets the same administrative limit (MaxValRange, MaxPageSize...).

RESULT_NAMES = {
    0: "success",
    1: "operationsError",
    2: "protocolError",
    3: "timeLimitExceeded",
    4: "sizeLimitExceeded",
    7: "authMethodNotSupported",
    8: "strongerAuthRequired",
    10: "referral",
    11: "adminLimitExceeded",
    12: "unavailableCriticalExtension",
    13: "confidentialityRequired",
    16: "noSuchAttribute",
    17: "undefinedAttributeType",
    18: "inappropriateMatching",
    19: "constraintViolation",
    20: "attributeOrValueExists",
    21: "invalidAttributeSyntax",
    32: "noSuchObject",
    34: "invalidDNSyntax",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
    53: "unwillingToPerform",
    64: "namingViolation",
    65: "objectClassViolation",
    66: "notAllowedOnNonLeaf",
    67: "notAllowedOnRDN",
    68: "entryAlreadyExists",
    69: "objectClassModsProhibited",
    80: "other",
    81: "serverDown",
    85: "timeout",
    91: "connectError",
}


class DirectoryError(Exception):
    """The directory could not be reached or refused the request; the message says why.

    ``result_code``/``result_name`` are the LDAP result (None/"" when the failure was not an LDAP result, e.g.
    a refused TCP connection), ``diagnostic`` the server's diagnosticMessage, ``operation`` and ``target``
    what was attempted on which DN or URL.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        result_code: int | None = None,
        result_name: str = "",
        diagnostic: str = "",
        operation: str = "",
        target: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.result_code = result_code
        self.result_name = result_name
        self.diagnostic = diagnostic
        self.operation = operation
        self.target = target


class DirectoryRetryable(DirectoryError):
    """Transient: busy, unavailable, time limit, server down or a broken connection. Retry with backoff.

    A write that failed this way may or may not have been applied; re-read before deciding (apply_desired does).
    """

    retryable = True


class DirectoryPermanent(DirectoryError):
    """The request is wrong or not allowed (constraint, syntax, schema, access, credentials). Do not retry."""


class DirectoryConflict(DirectoryPermanent):
    """The entry changed since it was read (attributeOrValueExists / noSuchAttribute): re-read and re-plan."""


class DirectoryNotFound(DirectoryPermanent):
    """No such entry (noSuchObject), or no user carries the GUID looked up."""


class DirectorySingleValued(DirectoryPermanent):
    """AD refused a value for an attribute that already holds its one value: attributeOrValueExists (20) with the
    extended error 0000200D (ERROR_DS_ATTRIBUTE_OR_VALUE_EXISTS). Unlike a value-level conflict (00002083), re-reading
    and re-planning does not help: the request itself adds where it must replace."""


class DirectoryInconsistentEntry(DirectoryPermanent):
    """The entry holds values that contradict each other (e.g. ``SMTP:x`` and ``smtp:x`` in proxyAddresses), so no
    minimal modify can be planned against it; someone has to correct the entry in AD.

    ``attribute`` and ``values`` name what contradicts; ``target`` is the entry's DN.
    """

    def __init__(self, message: str, *, attribute: str, values: tuple[str, ...], **kwargs: Any):
        super().__init__(message, **kwargs)
        self.attribute = attribute
        self.values = values


def error_class(code: int | None) -> type[DirectoryError]:
    """The error class for an LDAP result code."""
    if code in RETRYABLE_CODES:
        return DirectoryRetryable
    if code in CONFLICT_CODES:
        return DirectoryConflict
    if code in NOT_FOUND_CODES:
        return DirectoryNotFound
    return DirectoryPermanent


# AD's extended error (the first eight hex digits of its diagnostic message) for attributeOrValueExists on an
# attribute that already holds a value: Microsoft's system error table names 0x200D ERROR_DS_ATTRIBUTE_OR_VALUE_EXISTS
# ("attribute or value already exists"), distinct from 0x2083 ERROR_DS_ATT_VAL_ALREADY_EXISTS, the value-level
# duplicate that a re-read and re-plan resolves.
AD_SINGLE_VALUE_EXISTS = "0000200D"


def error_for_result(result: Mapping[str, Any], *, operation: str, target: str) -> DirectoryError:
    """Turn an unsuccessful ldap3 result dict into the matching error, with the server's diagnostic message."""
    code = result.get("result")
    name = result.get("description") or RESULT_NAMES.get(code, "") or "unknown"
    diagnostic = (result.get("message") or "").strip()
    text = f"{operation} {target} failed: {name} ({code})"
    if diagnostic:
        text += f": {diagnostic}"
    kind = error_class(code)
    if code == 20 and diagnostic.upper().startswith(AD_SINGLE_VALUE_EXISTS):
        kind = DirectorySingleValued
        text = (
            f"{operation} {target} failed: the directory refused a value for an attribute that already holds its one "
            f"value (AD {AD_SINGLE_VALUE_EXISTS}, ERROR_DS_ATTRIBUTE_OR_VALUE_EXISTS); sending it again will not "
            f"help. {name} ({code}): {diagnostic}"
        )
    return kind(text, result_code=code, result_name=name, diagnostic=diagnostic, operation=operation, target=target)


def is_connection_error(exc: BaseException) -> bool:
    """True for the ldap3 exceptions that mean the connection is unusable (reconnecting may help)."""
    if isinstance(exc, LDAPResponseTimeoutError):
        return True
    if isinstance(exc, LDAPCommunicationError):
        return not _is_tls_failure(exc)
    return False


# What ldap3 and the ssl module say when a TLS handshake fails for a reason that will not go away by itself.
_TLS_MARKERS = ("certificate", "doesn't match any name", "wrong version number", "unknown ca", "handshake failure")


def _is_tls_failure(exc: BaseException) -> bool:
    # ldap3 wraps a refused certificate in LDAPSocketOpenError, like a refused TCP connection; but an unknown CA
    # or a wrong host name is a configuration problem, not an outage, and must not be retried for hours. A
    # handshake that merely timed out is an outage.
    text = str(exc).lower()
    return "timed out" not in text and any(marker in text for marker in _TLS_MARKERS)


def error_for_exception(exc: LDAPException, *, operation: str, target: str, url: str) -> DirectoryError:
    """Turn an ldap3 exception (raised instead of a result: socket, timeout, TLS, client-side checks) into an error."""
    detail = str(exc).strip() or exc.__class__.__name__
    if is_connection_error(exc):
        return DirectoryRetryable(
            f"{operation} {target} failed: the directory at {url} is unreachable or dropped the connection: {detail}",
            diagnostic=detail,
            operation=operation,
            target=target,
        )
    if _is_tls_failure(exc):
        detail += " (check LDAP_CA_FILE and that the certificate names the host in LDAP_URL)"
    # Client-side refusals (an attribute the server schema does not define, a malformed DN or filter, a TLS
    # configuration error) fail the same way every time.
    return DirectoryPermanent(
        f"{operation} {target} failed: {detail}", diagnostic=detail, operation=operation, target=target
    )
