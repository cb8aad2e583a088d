"""Writes of the portal shell: granting and revoking roles. Each runs in one transaction with its audit event."""

import datetime as dt
from collections.abc import Iterable

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.dn import InvalidDn, normalize_dn
from portal.limits import REASON_MAX_LENGTH, SCOPES_MAX_LENGTH, too_long
from portal.models import AuditEvent, RoleAssignment, RoleScope, User
from portal.roles import TENANT_WIDE_ROLES, Action, Role, clashing_role, may


class PortalError(Exception):
    """A request the portal refuses, with a message the person can act on."""


def _require_configure(actor: User | None, user: User) -> None:
    # actor None is the command line (manage.py), which already has the database's keys.
    if actor is None:
        return
    if not may(actor, Action.PORTAL_CONFIGURE):
        raise PortalError("Only an administrator can change role assignments.")
    if actor.pk == user.pk:
        raise PortalError("You cannot change your own roles; ask another administrator.")


def _clean_reason(reason: str) -> str:
    reason = (reason or "").strip()
    problem = too_long(reason, REASON_MAX_LENGTH, "The reason")
    if problem:
        raise PortalError(problem)
    return reason


def _snapshot(assignment: RoleAssignment) -> dict:
    snapshot = {
        "user": assignment.user.get_username(),
        "role": assignment.role.name,
        "tenant_wide": assignment.tenant_wide,
        "scopes": sorted(assignment.scopes.values_list("base_dn", flat=True)),
    }
    if assignment.from_groups:
        snapshot["from_groups"] = True  # held through Entra ID groups (portal.group_roles)
    return snapshot


def _sync_user_flags(user: User) -> None:
    # django-rq's dashboard checks is_staff; only the admin role may open it.
    is_admin = user.role_assignments.filter(role__name=Role.ADMIN).exists()
    if user.is_staff != is_admin:
        user.is_staff = is_admin
        user.save(update_fields=["is_staff"])


def clean_scopes(role: Role, tenant_wide: bool, scopes: Iterable[str], *, what: str) -> dict[str, str]:
    """The OU scopes of a role's ``what`` (an assignment, a group mapping) checked against the role, by normal form
    (the first spelling of each kept); PortalError names the problem."""
    scopes = [dn.strip() for dn in scopes if dn.strip()]
    problem = too_long("\n".join(scopes), SCOPES_MAX_LENGTH, "The list of OU scopes")
    if problem:
        raise PortalError(problem)
    if role in TENANT_WIDE_ROLES and not tenant_wide:
        raise PortalError(f"The {role} role acts on the whole tenant; it cannot be limited to OUs.")
    if tenant_wide and scopes:
        raise PortalError(f"A tenant-wide {what} cannot also list OU scopes; choose one or the other.")
    if not tenant_wide and not scopes:
        raise PortalError(f"Give at least one OU scope, or make the {what} tenant-wide.")
    normalised: dict[str, str] = {}
    for dn in scopes:
        try:
            normalised.setdefault(normalize_dn(dn), dn)
        except InvalidDn as exc:
            raise PortalError(f"OU scope rejected: {exc}") from None
    return normalised


@transaction.atomic
def role_assign(
    *,
    actor: User | None,
    user: User,
    role: Role,
    tenant_wide: bool = False,
    scopes: Iterable[str] = (),
    reason: str = "",
) -> RoleAssignment:
    """Give ``user`` the ``role``, tenant-wide or limited to the OU subtrees in ``scopes`` (replacing earlier ones)."""
    _require_configure(actor, user)
    role = Role(role)
    reason = _clean_reason(reason)
    normalised = clean_scopes(role, tenant_wide, scopes, what="assignment")
    other = clashing_role(role, user.role_assignments.exclude(role__name=role).values_list("role__name", flat=True))
    if other is not None:
        raise PortalError(
            f"{user.get_username()} already holds the {other} role, which cannot be combined with {role}: "
            "an auditor must not also be able to change what they audit."
        )
    group = Group.objects.get(name=role)
    assignment, created = RoleAssignment.objects.select_for_update().get_or_create(
        user=user, role=group, defaults={"tenant_wide": tenant_wide, "created_by": actor}
    )
    before = None if created else _snapshot(assignment)
    if not created and assignment.from_groups:
        # An administrator's grant of a role the user held through Entra groups: from now on it is the
        # administrator's, which a sign-in leaves alone.
        assignment.from_groups = False
        assignment.save(update_fields=["from_groups"])
    elif not created and _resent(assignment, tenant_wide=tenant_wide, scopes=set(normalised), reason=reason):
        return assignment
    assignment.tenant_wide = tenant_wide
    assignment.save(update_fields=["tenant_wide"])
    assignment.scopes.all().delete()
    RoleScope.objects.bulk_create(
        RoleScope(assignment=assignment, base_dn=dn, base_dn_norm=norm) for norm, dn in normalised.items()
    )
    user.groups.add(group)
    _sync_user_flags(user)
    audit_record(
        actor=actor,
        action="portal.role.assigned",
        obj=user,
        before=before,
        after=_snapshot(assignment),
        reason=reason,
    )
    return assignment


# An unchanged assignment is recorded again (a yearly review re-affirms a role, with its reason), unless it was
# recorded with the same reason this recently: that is the same form sent twice (a double click, a resent page, or
# two administrators acting on the same ticket).
RESEND_WINDOW = dt.timedelta(minutes=2)


def _resent(assignment: RoleAssignment, *, tenant_wide: bool, scopes: set[str], reason: str) -> bool:
    held = set(assignment.scopes.values_list("base_dn_norm", flat=True))
    if assignment.tenant_wide != tenant_wide or held != scopes:
        return False
    last = (
        AuditEvent.objects.filter(action="portal.role.assigned", object_type=User._meta.label_lower,
                                  object_id=str(assignment.user_id))
        .order_by("-id")
        .first()
    )  # fmt: skip
    return (
        last is not None
        and last.reason == reason
        and (last.after or {}).get("role") == assignment.role.name
        and timezone.now() - last.occurred_at < RESEND_WINDOW
    )


LAST_ADMIN_MESSAGE = (
    "{user} is the portal's last administrator: give the admin role to another active account first, so the portal "
    "is never left without anyone who can manage roles."
)


def is_last_admin(user: User) -> bool:
    """Does ``user`` hold the only admin assignment of an active account (assignments are locked by the caller)?"""
    admins = RoleAssignment.objects.filter(role__name=Role.ADMIN, tenant_wide=True, user__is_active=True)
    return admins.filter(user=user).exists() and not admins.exclude(user=user).exists()


@transaction.atomic
def role_revoke(*, actor: User | None, user: User, role: Role, reason: str = "") -> None:
    """Take ``role`` away from ``user``. Revoking a role the user does not hold is an error, not a no-op."""
    _require_configure(actor, user)
    role = Role(role)
    reason = _clean_reason(reason)
    assignment = RoleAssignment.objects.select_for_update().filter(user=user, role__name=role).first()
    if assignment is None:
        raise PortalError(f"{user.get_username()} does not hold the {role} role.")
    if role is Role.ADMIN:
        # Two administrators revoking each other at once must not both pass the check (PostgreSQL): lock them all.
        list(RoleAssignment.objects.select_for_update().filter(role__name=Role.ADMIN).values_list("pk", flat=True))
    if role is Role.ADMIN and is_last_admin(user):
        raise PortalError(LAST_ADMIN_MESSAGE.format(user=user.get_username()))
    before = _snapshot(assignment)
    assignment.delete()
    user.groups.remove(assignment.role)
    _sync_user_flags(user)
    audit_record(actor=actor, action="portal.role.revoked", obj=user, before=before, after=None, reason=reason)
