"""Portal roles held through Entra ID groups: the group mappings administrators keep, and applying them at sign-in.

A GroupRoleMapping says "members of this Entra group get this role, tenant-wide or in these OUs". Mappings change
only through ``group_mapping_save`` and ``group_mapping_remove`` (administrators, audited, never for a group the
administrator belongs to). ``entra_roles_apply`` runs at every Entra sign-in: the user's group-held assignments
(``RoleAssignment.from_groups``) become exactly what their groups map to, each change audited like an
administrator's grant; a role an administrator granted by hand is left as it is.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.models import Group
from django.db import transaction

from portal.audit import audit_record
from portal.dn import InvalidDn, normalize_dn
from portal.limits import too_long
from portal.models import GroupRoleMapping, RoleAssignment, RoleScope, User
from portal.roles import INCOMPATIBLE_ROLES, Action, Role, clashing_role, may
from portal.services import PortalError, _clean_reason, _snapshot, _sync_user_flags, clean_scopes, is_last_admin

DISPLAY_NAME_MAX_LENGTH = 256


def _mapping_snapshot(mapping: GroupRoleMapping) -> dict:
    return {
        "group_id": mapping.group_id,
        "display_name": mapping.display_name,
        "role": mapping.role.name,
        "tenant_wide": mapping.tenant_wide,
        "scopes": list(mapping.scopes),
    }


def _require_group_admin(actor: User | None, group_id: str) -> None:
    if actor is None:  # the command line (manage.py entra_group_map)
        return
    if not may(actor, Action.PORTAL_CONFIGURE):
        raise PortalError("Only an administrator can change group mappings.")
    account = getattr(actor, "entra_account", None)
    if account is not None and group_id in {g.lower() for g in account.groups}:
        raise PortalError(
            "You are a member of this group, so changing its mapping would change your own roles; ask another "
            "administrator."
        )


def clean_group_id(value: str) -> str:
    """An Entra object id (a GUID), lower case; PortalError otherwise."""
    try:
        return str(uuid.UUID((value or "").strip()))
    except ValueError:
        raise PortalError(
            f"{(value or '').strip()[:80]!r} is not an Entra group object id: give the group's Object ID, a GUID "
            "such as 0f8fad5b-d9cb-469f-a165-70867728950e, as shown on the group's page in the Entra admin center."
        ) from None


@transaction.atomic
def group_mapping_save(
    *,
    actor: User | None,
    mapping: GroupRoleMapping | None = None,
    group_id: str,
    display_name: str,
    role: Role,
    tenant_wide: bool = False,
    scopes: Iterable[str] = (),
    reason: str = "",
) -> GroupRoleMapping:
    """Create a mapping (``mapping`` None) or change one. Members get the change at their next sign-in."""
    group_id = clean_group_id(group_id)
    _require_group_admin(actor, group_id)
    if mapping is not None:
        mapping = GroupRoleMapping.objects.select_for_update().select_related("role").get(pk=mapping.pk)
        _require_group_admin(actor, mapping.group_id)
    role = Role(role)
    reason = _clean_reason(reason)
    display_name = (display_name or "").strip()
    if not display_name:
        raise PortalError("Give the group's display name, so people reading the mappings know which group it is.")
    problem = too_long(display_name, DISPLAY_NAME_MAX_LENGTH, "The display name")
    if problem:
        raise PortalError(problem)
    scopes = list(clean_scopes(role, tenant_wide, scopes, what="mapping").values())  # one spelling an OU
    others = GroupRoleMapping.objects.filter(group_id=group_id).exclude(pk=mapping.pk if mapping else None)
    if others.filter(role__name=role).exists():
        raise PortalError(f"The group {display_name} is already mapped to the {role} role; change that mapping.")
    other = clashing_role(role, others.values_list("role__name", flat=True))
    if other is not None:
        raise PortalError(
            f"The group {display_name} is already mapped to the {other} role, which cannot be combined with "
            f"{role}: an auditor must not also be able to change what they audit."
        )
    before = _mapping_snapshot(mapping) if mapping else None
    target = mapping or GroupRoleMapping()
    target.group_id, target.display_name, target.role = group_id, display_name, Group.objects.get(name=role)
    target.tenant_wide, target.scopes = tenant_wide, scopes
    after = _mapping_snapshot(target)
    if before == after:
        return target
    target.save()
    audit_record(
        actor=actor,
        action="portal.group_mapping.changed" if mapping else "portal.group_mapping.created",
        obj=target,
        before=before,
        after=after,
        reason=reason,
    )
    return target


@transaction.atomic
def group_mapping_remove(*, actor: User | None, mapping: GroupRoleMapping, reason: str = "") -> None:
    """Remove a mapping; its members lose the role at their next sign-in."""
    mapping = GroupRoleMapping.objects.select_for_update().select_related("role").filter(pk=mapping.pk).first()
    if mapping is None:
        raise PortalError("That group mapping no longer exists: another administrator removed it.")
    _require_group_admin(actor, mapping.group_id)
    reason = _clean_reason(reason)
    before = _mapping_snapshot(mapping)
    audit_record(actor=actor, action="portal.group_mapping.removed", obj=mapping, before=before, after=None,
                 reason=reason)  # fmt: skip
    mapping.delete()


def group_mapping_list(*, user):
    if not may(user, Action.PORTAL_CONFIGURE):
        return GroupRoleMapping.objects.none()
    return GroupRoleMapping.objects.select_related("role").order_by("display_name", "group_id", "role__name")


@dataclass
class Grant:
    """What a user's groups give for one role."""

    tenant_wide: bool = False
    scopes: dict[str, str] = field(default_factory=dict)  # normalised DN -> DN as written
    groups: list[str] = field(default_factory=list)  # display names, for the audit reason


def roles_for_groups(group_ids: Iterable[str]) -> dict[Role, Grant]:
    """The roles (with the union of their scopes) that the mappings give members of ``group_ids``."""
    wanted: dict[Role, Grant] = {}
    ids = {g.lower() for g in group_ids}
    for mapping in GroupRoleMapping.objects.filter(group_id__in=ids).select_related("role"):
        grant = wanted.setdefault(Role(mapping.role.name), Grant())
        grant.groups.append(mapping.display_name)
        grant.tenant_wide |= mapping.tenant_wide
        for dn in mapping.scopes:
            try:
                grant.scopes.setdefault(normalize_dn(dn), dn)
            except InvalidDn:
                continue  # saved before a stricter parser; a scope that cannot be read grants nothing
    for grant in wanted.values():
        if grant.tenant_wide:
            grant.scopes = {}
    return {role: grant for role, grant in wanted.items() if grant.tenant_wide or grant.scopes}


class IncompatibleGroupRoles(PortalError):
    """The user's groups (with their hand-granted roles) add up to roles that must not be combined."""


def _held_as(assignment: RoleAssignment) -> tuple[bool, set[str]]:
    return assignment.tenant_wide, set(assignment.scopes.values_list("base_dn_norm", flat=True))


def entra_roles_apply(*, user: User, group_ids: Iterable[str]) -> list[str]:
    """Make the user's group-held roles match their groups (call inside the sign-in's transaction).

    Returns the roles the user holds afterwards. Raises IncompatibleGroupRoles, changing nothing, when the result
    would combine the auditor role with another.
    """
    wanted = roles_for_groups(group_ids)
    current = {Role(a.role.name): a for a in user.role_assignments.select_for_update().select_related("role")}
    manual = {role for role, a in current.items() if not a.from_groups}
    result = manual | set(wanted)
    for pair in INCOMPATIBLE_ROLES:
        if pair <= result:
            names = " and ".join(sorted(pair))
            raise IncompatibleGroupRoles(
                f"Your Entra ID groups give you the {names} roles, which cannot be held together. Ask an "
                "administrator to correct the group mappings or your group memberships."
            )
    for role, grant in wanted.items():
        if role in manual:
            continue
        reason = "Entra ID groups: " + ", ".join(sorted(grant.groups))
        assignment = current.get(role)
        if assignment is not None and _held_as(assignment) == (grant.tenant_wide, set(grant.scopes)):
            continue
        before = _snapshot(assignment) if assignment else None
        if assignment is None:
            assignment = RoleAssignment.objects.create(
                user=user, role=Group.objects.get(name=role), tenant_wide=grant.tenant_wide, from_groups=True
            )
        else:
            assignment.tenant_wide = grant.tenant_wide
            assignment.save(update_fields=["tenant_wide"])
            assignment.scopes.all().delete()
        RoleScope.objects.bulk_create(
            RoleScope(assignment=assignment, base_dn=dn, base_dn_norm=norm) for norm, dn in grant.scopes.items()
        )
        user.groups.add(assignment.role)
        audit_record(actor=None, action="portal.role.assigned", obj=user, before=before, after=_snapshot(assignment),
                     reason=reason)  # fmt: skip
    for role, assignment in current.items():
        if role in manual or role in wanted:
            continue
        if role is Role.ADMIN and is_last_admin(user):
            # Same rule as an administrator's revoke: the portal keeps at least one administrator.
            audit_record(
                actor=None,
                action="portal.role.kept",
                obj=user,
                before=None,
                after=_snapshot(assignment),
                reason="No longer given by the user's Entra ID groups, but kept: the last administrator.",
            )
            continue
        before = _snapshot(assignment)
        assignment.delete()
        user.groups.remove(assignment.role)
        audit_record(actor=None, action="portal.role.revoked", obj=user, before=before, after=None,
                     reason="No longer given by the user's Entra ID groups.")  # fmt: skip
    _sync_user_flags(user)
    return sorted(user.role_assignments.values_list("role__name", flat=True))
