"""Reads of the portal shell."""

from django.db.models import Q, QuerySet

from portal.models import AuditEvent, RoleAssignment
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
