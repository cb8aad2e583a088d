"""Reads of the portal shell."""

from django.db import connection
from django.db.models import Q, QuerySet

from portal.models import AuditEvent, GroupRoleMapping, RoleAssignment, User
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
        events = events.filter(actor_filter(filters["actor"]))
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


# People an actor filter may name before it is too broad to be useful as a list of ids; likewise the names the
# unnamed actors (the system, jobs) were recorded under.
ACTOR_MATCH_LIMIT = 500

# The distinct names recorded for events without a user, one index probe each (a loose index scan over the partial
# index portal_audit_unnamed_actor_idx): there are a handful, under hundreds of thousands of events.
_UNNAMED_ACTORS = """
WITH RECURSIVE names(name) AS (
    SELECT (SELECT MIN(actor_name) FROM portal_auditevent WHERE actor_id IS NULL)
    UNION ALL
    SELECT (SELECT MIN(actor_name) FROM portal_auditevent WHERE actor_id IS NULL AND actor_name > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL LIMIT %s"""


def actor_filter(text: str) -> Q:
    """The events of the people whose user name or full name holds ``text``, and of the unnamed actors (the system,
    a job) whose recorded name holds it.

    Both are resolved to a short list first (people in the users table, unnamed actors by their few distinct
    names) and their events found by index: matching the text against the recorded names of a million events cost a
    second on PostgreSQL where it matched most of them (bench/bench_audit_list.py). A name typed as the log writes
    it ("alice (Alice Smith)") matches on its user name part."""
    text = text.strip()
    typed = text.split(" (", 1)[0] if text.endswith(")") else text
    people = list(
        User.objects.filter(
            Q(username__icontains=typed) | Q(first_name__icontains=typed) | Q(last_name__icontains=typed)
        ).values_list("pk", flat=True)[: ACTOR_MATCH_LIMIT + 1]
    )
    with connection.cursor() as cursor:
        cursor.execute(_UNNAMED_ACTORS, [ACTOR_MATCH_LIMIT + 1])
        recorded = [name for (name,) in cursor.fetchall()]
    if len(people) > ACTOR_MATCH_LIMIT or len(recorded) > ACTOR_MATCH_LIMIT:
        return Q(actor_name__icontains=text)  # too many to list: match the recorded names instead
    unnamed = [name for name in recorded if text.casefold() in name.casefold()]
    return Q(actor_id__in=people) | Q(actor__isnull=True, actor_name__in=unnamed)


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
