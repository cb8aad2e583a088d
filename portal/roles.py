"""Roles, actions and OU scopes: who may do what, and where in the directory.

A role is a Django group carrying action permissions (``portal.Capability``). A user holds roles through
RoleAssignments, each either tenant-wide or limited to OU subtrees. Two questions are answered here, and
only here, so views, services and jobs all give the same answer:

- ``may(user, action, dn=None)``: may the user perform the action (on the object at ``dn``)?
- ``scope_filter(user, action, field)``: the Q object that restricts a queryset to the objects the user
  may perform the action on, given the model field holding the object's normalised DN.

Django superusers get no implicit power here: portal rights come from role assignments only, so an
administrator cannot step around separation of duties by being a superuser.
"""

from collections.abc import Iterable
from enum import StrEnum

from django.db.models import Q
from django.db.models.functions import Reverse
from django.db.models.lookups import Exact, StartsWith
from django.http import Http404

from portal.dn import InvalidDn, normalize_dn


class Role(StrEnum):
    """The portal's roles; each value is the name of the Django group that carries it."""

    HELPDESK = "helpdesk"
    WAVE_OPERATOR = "wave_operator"
    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Action(StrEnum):
    """The portal's actions; each value is a permission codename on ``portal.Capability``."""

    MAILBOX_VIEW = "mailbox_view"
    MAILBOX_EDIT = "mailbox_edit"
    BULK_EDIT = "bulk_edit"
    WAVE_VIEW = "wave_view"
    WAVE_BUILD = "wave_build"
    WAVE_RUN = "wave_run"
    WAVE_APPROVE = "wave_approve"
    AUDIT_VIEW = "audit_view"
    AUDIT_EXPORT = "audit_export"
    AUDIT_VERIFY = "audit_verify"
    PORTAL_CONFIGURE = "portal_configure"
    JOBS_VIEW = "jobs_view"

    @property
    def permission(self) -> str:
        return f"portal.{self.value}"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


# Migration 0003 created the groups from a copy of this table; after every migrate (and every test flush)
# sync_role_groups() brings the groups' permissions back in line with it.
ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.HELPDESK: frozenset({Action.MAILBOX_VIEW, Action.MAILBOX_EDIT, Action.BULK_EDIT}),
    # Operators prepare mailboxes for their waves in bulk (a CSV of attribute values), not one by one on the page.
    Role.WAVE_OPERATOR: frozenset(
        {Action.MAILBOX_VIEW, Action.WAVE_VIEW, Action.WAVE_BUILD, Action.WAVE_RUN, Action.BULK_EDIT}
    ),
    Role.APPROVER: frozenset({Action.MAILBOX_VIEW, Action.WAVE_VIEW, Action.WAVE_APPROVE}),
    Role.AUDITOR: frozenset(
        {Action.MAILBOX_VIEW, Action.WAVE_VIEW, Action.AUDIT_VIEW, Action.AUDIT_EXPORT, Action.AUDIT_VERIFY}
    ),
    Role.ADMIN: frozenset(
        {Action.MAILBOX_VIEW, Action.WAVE_VIEW, Action.AUDIT_VIEW, Action.PORTAL_CONFIGURE, Action.JOBS_VIEW}
    ),
}

# Actions on the portal or its history, not on a directory object: only a tenant-wide assignment grants them,
# and roles made only of such actions (besides reading) cannot be limited to OUs.
TENANT_ACTIONS: frozenset[Action] = frozenset(
    {Action.AUDIT_VIEW, Action.AUDIT_EXPORT, Action.AUDIT_VERIFY, Action.PORTAL_CONFIGURE, Action.JOBS_VIEW}
)
TENANT_WIDE_ROLES: frozenset[Role] = frozenset({Role.AUDITOR, Role.ADMIN})

# The auditor checks what the others did, so it never holds a role that changes anything.
INCOMPATIBLE_ROLES: frozenset[frozenset[Role]] = frozenset(
    frozenset({Role.AUDITOR, other}) for other in Role if other is not Role.AUDITOR
)


def clashing_role(role: Role, held: Iterable[str]) -> Role | None:
    """A role among ``held`` that cannot be combined with ``role`` (INCOMPATIBLE_ROLES), or None."""
    return next((Role(other) for other in held if frozenset({role, Role(other)}) in INCOMPATIBLE_ROLES), None)


def sync_role_groups(**kwargs) -> None:
    """Create missing role groups and set each group's permissions to exactly ROLE_ACTIONS (post_migrate)."""
    from django.contrib.auth.models import Group, Permission

    for role, actions in ROLE_ACTIONS.items():
        group, _ = Group.objects.get_or_create(name=role.value)
        wanted = Permission.objects.filter(content_type__app_label="portal", codename__in=[a.value for a in actions])
        group.permissions.set(wanted)


def _effective(assignments):
    """Assignments that grant something: tenant-wide, or limited to at least one OU (fail closed otherwise)."""
    return assignments.filter(Q(tenant_wide=True) | Q(scopes__isnull=False)).distinct()


def _grants(user, action: Action):
    """The user's effective assignments whose role carries ``action`` (through the group's permissions)."""
    from portal.models import RoleAssignment

    if user is None or not user.is_authenticated or not user.is_active:
        return RoleAssignment.objects.none()
    grants = _effective(
        RoleAssignment.objects.filter(
            user=user,
            role__permissions__codename=action.value,
            role__permissions__content_type__app_label="portal",
        )
    )
    return grants.filter(tenant_wide=True) if action in TENANT_ACTIONS else grants


def granted_actions(user) -> set[Action]:
    """Every action any of the user's roles grants (anywhere), in one query."""
    if user is None or not user.is_authenticated or not user.is_active:
        return set()
    rows = _effective(user.role_assignments.filter(role__permissions__content_type__app_label="portal")).values_list(
        "role__permissions__codename", "tenant_wide"
    )
    granted = {Action(code) for code, _ in rows if code in Action._value2member_map_}
    tenant_wide = {Action(code) for code, wide in rows if wide and code in Action._value2member_map_}
    return {action for action in granted if action not in TENANT_ACTIONS or action in tenant_wide}


def user_roles(user) -> set[str]:
    if user is None or not user.is_authenticated or not user.is_active:
        return set()
    return set(user.role_assignments.values_list("role__name", flat=True))


def may(user, action: Action, dn: str | None = None) -> bool:
    """May ``user`` perform ``action``, anywhere (``dn`` None) or on the object at ``dn``?

    A malformed or empty ``dn`` is outside every scope (only a tenant-wide grant covers it), as in scope_filter.
    """
    grants = _grants(user, action)
    if dn is None:
        return grants.exists()
    if grants.filter(tenant_wide=True).exists():
        return True
    try:
        target = normalize_dn(dn)
    except InvalidDn:
        return False  # an object whose place in the directory is unknown is outside every scope
    scopes = grants.values_list("scopes__base_dn_norm", flat=True)
    return any(base and (target == base or target.endswith("," + base)) for base in scopes)


def scope_filter(user, action: Action, dn_field: str, *, reversed_index: bool = False) -> Q:
    """A Q restricting a queryset to objects (by normalised DN in ``dn_field``) the user may act on.

    Matches nothing when the user has no grant; matches everything for a tenant-wide grant. ``reversed_index``:
    match the subtree on the reversed DN instead (subtree_filter), for a table indexed on it.
    """
    bases = scope_dns(user, action)
    if bases is None:
        return Q()
    condition = Q(pk__in=[])
    for base in bases:
        condition |= subtree_filter(dn_field, base, reversed_index=reversed_index)
    return condition


def scope_dns(user, action: Action) -> list[str] | None:
    """The normalised base DNs of the user's scopes for ``action`` (sorted; none without a grant), or None for a
    tenant-wide grant: what scope_filter matches."""
    grants = _grants(user, action)
    if grants.filter(tenant_wide=True).exists():
        return None
    return sorted({base for base in grants.values_list("scopes__base_dn_norm", flat=True) if base})


def subtree_filter(dn_field: str, base: str, *, reversed_index: bool = False) -> Q:
    """Objects whose normalised DN in ``dn_field`` is ``base`` or lies below it.

    A DN's subtree is a suffix, which no b-tree on the DN serves (PostgreSQL scans the whole table for LIKE '%...').
    Reversed, the suffix becomes a prefix: ``reversed_index`` writes the match on REVERSE(dn_field) as well, which an
    expression index with text_pattern_ops answers as a range scan (soa's mailbox DN and OU have one). The plain
    match stays beside it: where rows are read another way, it is the cheaper test and turns most of them away
    before any is reversed (a tenth of a million mailboxes counted in a third of the time).
    """
    plain = Q(**{dn_field: base}) | Q(**{f"{dn_field}__endswith": "," + base})
    if not reversed_index:
        return plain
    flipped = Reverse(dn_field)
    return plain & (Q(Exact(flipped, base[::-1])) | Q(StartsWith(flipped, ("," + base)[::-1])))


def scope_bases(user, action: Action) -> list[str] | None:
    """The OU subtrees (as written when granted) where ``user`` may perform ``action``; None when tenant-wide.

    For telling people where their own scope lies; deciding is ``may`` and ``scope_filter``'s work.
    """
    grants = _grants(user, action)
    if grants.filter(tenant_wide=True).exists():
        return None
    return sorted({base for base in grants.values_list("scopes__base_dn", flat=True) if base}, key=str.lower)


class OutsideScope(Http404):
    """An object the user asked for by id is absent or outside the user's scope for ``action``.

    Both are answered alike, 404 with the same page (portal.views.errors), so the answer never tells whether
    something exists where the user may not look; the page names the user's own scope instead.
    """

    def __init__(self, noun: str, action: Action):
        super().__init__(f"No such {noun} in your scope.")
        self.noun = noun
        self.action = action
