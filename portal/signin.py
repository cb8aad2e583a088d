"""Sign-in throttling and the audit events of signing in and out.

Failed sign-ins are counted twice: against the user name typed (whether or not an account has it) and against the
client address. Either count reaching its limit within SIGNIN_FAILURE_WINDOW_MINUTES locks that name or address for
SIGNIN_LOCKOUT_MINUTES; while locked, even the right password is refused, with one message that is the same for
every name, so neither the lock nor its wording tells an attacker which accounts exist. An administrator can release
a lock early (``signin_lock_release``, audited).

Every outcome is an audit event: ``portal.signin.succeeded``, ``.failed``, ``.locked_out``, ``.signed_out``,
``.lock_released`` and ``portal.password.changed``. None of them holds the password typed.
"""

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

from portal.audit import audit_record
from portal.models import SignInThrottle, User
from portal.roles import Action, may

LOCKED_MESSAGE = (
    "Too many failed sign-ins for this account or from this address. Sign-in is paused for a while; "
    "try again later, or ask an administrator to release the lock."
)
_USERNAME_LENGTH = 150
Kind = SignInThrottle.Kind


class SignInLockError(Exception):
    """A lock release the portal refuses, with a message the person can act on."""


@dataclass(frozen=True)
class Attempt:
    """Who tried to sign in, as far as the portal can tell before checking the password."""

    username: str
    address: str

    @property
    def username_key(self) -> str:
        # Case-folded: "Alice" and "alice" count together, so changing letter case does not buy more guesses.
        return self.username.strip().casefold()[:_USERNAME_LENGTH]


def client_address(request: HttpRequest | None) -> str:
    """The client's address as the throttle counts it: an IPv4 address, or the /64 network of an IPv6 one.

    Behind a reverse proxy REMOTE_ADDR is the proxy's, so SIGNIN_CLIENT_ADDRESS_HEADER may name the header the
    proxy sets (its last comma-separated value is taken: the one the trusted proxy added). A /64 is usually one
    client, who could otherwise rotate through its 2^64 addresses for fresh counts.
    """
    if request is None:
        return "unknown"
    header = settings.SIGNIN_CLIENT_ADDRESS_HEADER
    raw = request.headers.get(header, "").split(",")[-1].strip() if header else request.META.get("REMOTE_ADDR", "")
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return "unknown"
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _limits() -> dict[str, int]:
    return {Kind.USERNAME: settings.SIGNIN_USERNAME_FAILURE_LIMIT, Kind.ADDRESS: settings.SIGNIN_ADDRESS_FAILURE_LIMIT}


def _keys(attempt: Attempt) -> list[tuple[str, str]]:
    return [(Kind.USERNAME, attempt.username_key), (Kind.ADDRESS, attempt.address)]


def signin_locked(attempt: Attempt) -> bool:
    """Is the name or the address of this attempt locked out now?"""
    condition = Q(pk__in=[])
    for kind, key in _keys(attempt):
        condition |= Q(kind=kind, key=key)
    return SignInThrottle.objects.filter(condition, locked_until__gt=timezone.now()).exists()


def _account(attempt: Attempt) -> User | None:
    return get_user_model().objects.filter(username=attempt.username).first()


def _audit_attempt(action: str, attempt: Attempt, *, actor: User | None = None, **details) -> None:
    account = actor or _account(attempt)
    audit_record(
        actor=actor,
        action=action,
        object_type="portal.user",
        object_id=str(account.pk) if account else "",
        object_repr=attempt.username[:_USERNAME_LENGTH],
        after={"username": attempt.username[:_USERNAME_LENGTH], "address": attempt.address, **details},
    )


@transaction.atomic
def signin_failed(attempt: Attempt, *, refused_while_locked: bool = False) -> bool:
    """Record a failed sign-in; return True if the attempt was refused by, or has just caused, a lock-out.

    An attempt refused by a lock is audited but not counted: its password was never checked.
    """
    if refused_while_locked:
        _audit_attempt("portal.signin.failed", attempt, outcome="refused: locked out")
        return True
    now = timezone.now()
    window = timedelta(minutes=settings.SIGNIN_FAILURE_WINDOW_MINUTES)
    lockout = timedelta(minutes=settings.SIGNIN_LOCKOUT_MINUTES)
    # Rows nobody has failed against for a while are history only the audit log needs to keep.
    SignInThrottle.objects.filter(
        Q(locked_until__isnull=True) | Q(locked_until__lt=now), last_failure_at__lt=now - max(window, lockout)
    ).delete()
    _audit_attempt("portal.signin.failed", attempt, outcome="wrong user name or password")
    locked_now = []
    for kind, key in _keys(attempt):
        limit = _limits()[kind]
        if limit <= 0:
            continue
        row, _ = SignInThrottle.objects.select_for_update().get_or_create(
            kind=kind, key=key, defaults={"first_failure_at": now, "last_failure_at": now}
        )
        expired_lock = row.locked_until is not None and row.locked_until <= now
        if expired_lock or row.first_failure_at < now - window:
            row.failures, row.first_failure_at, row.locked_until = 0, now, None
        row.failures += 1
        row.last_failure_at = now
        if row.failures >= limit and row.locked_until is None:
            row.locked_until = now + lockout
            locked_now.append(row)
        row.save()
    for row in locked_now:
        _audit_attempt(
            "portal.signin.locked_out",
            attempt,
            locked=row.get_kind_display(),
            failures=row.failures,
            locked_until=row.locked_until.isoformat(),
        )
    return bool(locked_now)


@transaction.atomic
def signin_succeeded(*, user: User, attempt: Attempt) -> None:
    """Record a sign-in with the right password and clear the name's count (the address keeps its own)."""
    SignInThrottle.objects.filter(kind=Kind.USERNAME, key=attempt.username_key).delete()
    _audit_attempt("portal.signin.succeeded", attempt, actor=user)


LOCAL_DISABLED_MESSAGE = "Signing in with a local account is switched off on this portal; sign in with Entra ID."


@transaction.atomic
def local_signin_refused(attempt: Attempt) -> None:
    """A local sign-in while LOCAL_SIGNIN_ENABLED is off: refused before any password is checked, and audited."""
    _audit_attempt("portal.signin.failed", attempt, outcome="refused: local sign-in is switched off")


@transaction.atomic
def signin_refused_here(*, user: User, attempt: Attempt, message: str) -> None:
    """The password was right but the account may not sign in on this page (the admin site wants staff)."""
    _audit_attempt("portal.signin.failed", attempt, actor=user, outcome=f"refused: {message}")


def signed_out(*, user: User, address: str) -> None:
    """Audit a sign-out; called by the sign-out view inside its transaction, before the session ends."""
    audit_record(actor=user, action="portal.signin.signed_out", obj=user, after={"address": address})


def password_changed(*, user: User, address: str) -> None:
    """Audit a password change (never the password); called inside the transaction that saves it."""
    audit_record(actor=user, action="portal.password.changed", obj=user, after={"address": address})


def signin_lock_list(*, user: User):
    """The names and addresses with failures counted or locked now; only administrators may see them."""
    if not may(user, Action.PORTAL_CONFIGURE):
        return SignInThrottle.objects.none()
    # Locks first, on every database (PostgreSQL sorts NULLs first when descending).
    return SignInThrottle.objects.order_by(F("locked_until").desc(nulls_last=True), "-last_failure_at")


def _snapshot(row: SignInThrottle) -> dict:
    return {
        "kind": row.kind,
        "key": row.key,
        "failures": row.failures,
        "locked_until": row.locked_until.isoformat() if row.locked_until else None,
    }


@transaction.atomic
def signin_lock_release(*, actor: User, throttle_id: int, reason: str) -> SignInThrottle:
    """Forget the failures counted against one name or address, releasing its lock. Administrators only."""
    if not may(actor, Action.PORTAL_CONFIGURE):
        raise SignInLockError("Only an administrator can release a sign-in lock.")
    if not reason.strip():
        raise SignInLockError("Say why the lock is released.")
    row = SignInThrottle.objects.select_for_update().filter(pk=throttle_id).first()
    if row is None:
        raise SignInLockError("That lock no longer exists: it expired or was released already.")
    before = _snapshot(row)
    row.delete()
    audit_record(
        actor=actor,
        action="portal.signin.lock_released",
        object_type="portal.signinthrottle",
        object_id=str(throttle_id),
        object_repr=f"{row.get_kind_display()} {row.key}",
        before=before,
        after=None,
        reason=reason,
    )
    return row
