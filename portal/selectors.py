"""Reads of the portal shell."""

from django.db.models import Q, QuerySet

from portal.models import AuditEvent, GroupRoleMapping, RoleAssignment
from portal.roles import Action, may

# The log's records of itself (exports, verification requests and results), which the list can hide.
AUDIT_OWN_ACTIONS = "portal.audit."


def audit_event_list(*, user, filters: dict, objects: Q | None = None) -> QuerySet[AuditEvent]:
    """Audit events matching the cleaned AuditFilterForm values (and ``objects``, a filter on the objects touched);
    nothing for a user without audit rights."""
    if not may(user, Action.AUDIT_VIEW):
        return AuditEvent.objects.none()
    events = AuditEvent.objects.all() if objects is None else AuditEvent.objects.filter(objects)
    if filters.get("hide_audit"):
        events = events.exclude(action__startswith=AUDIT_OWN_ACTIONS)
    if filters.get("actor"):
        events = events.filter(actor_name__icontains=filters["actor"])
    if filters.get("action"):
        events = events.filter(action__startswith=filters["action"])
    if filters.get("object"):
        events = events.filter(Q(object_id=filters["object"]) | Q(object_repr__icontains=filters["object"]))
    if filters.get("correlation_id"):
        events = events.filter(correlation_id=filters["correlation_id"])
    if filters.get("since"):
        events = events.filter(occurred_at__gte=filters["since"])
    if filters.get("until"):
        events = events.filter(occurred_at__lte=filters["until"])
    return events.order_by("-id")


def role_assignment_list(*, user) -> QuerySet[RoleAssignment]:
    if not may(user, Action.PORTAL_CONFIGURE):
        return RoleAssignment.objects.none()
    return (
        RoleAssignment.objects.select_related("user", "role")
        .prefetch_related("scopes")
        .order_by("user__username", "role__name")
    )


TENANT_WIDE = "Tenant-wide"


def roles_by_scope(*, user) -> list[dict]:
    """Who can do what, by OU: for each scope (tenant-wide first, then each OU), each role with the people holding it
    there and the Entra ID groups that give it there. Administrators only."""
    if not may(user, Action.PORTAL_CONFIGURE):
        return []
    table: dict[str, dict[str, dict[str, list[str]]]] = {}

    def add(scopes: list[str], role: str, kind: str, name: str) -> None:
        for scope in scopes:
            table.setdefault(scope, {}).setdefault(role, {"people": [], "groups": []})[kind].append(name)

    assignments = RoleAssignment.objects.select_related("user", "role").prefetch_related("scopes")
    for assignment in assignments.order_by("user__username"):
        scopes = [TENANT_WIDE] if assignment.tenant_wide else [s.base_dn for s in assignment.scopes.all()]
        add(scopes, assignment.role.name, "people", assignment.user.get_username())
    for mapping in GroupRoleMapping.objects.select_related("role").order_by("display_name"):
        add([TENANT_WIDE] if mapping.tenant_wide else list(mapping.scopes), mapping.role.name, "groups",
            mapping.display_name)  # fmt: skip
    order = sorted(table, key=lambda scope: (scope != TENANT_WIDE, scope.lower()))
    return [{"scope": scope, "roles": sorted(table[scope].items())} for scope in order]
