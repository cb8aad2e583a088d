"""role_assign and role_revoke: who may change roles, the rules they enforce, and the audit event each writes."""

import pytest
from django.contrib.auth.models import Group

from portal.models import AuditEvent, RoleAssignment, User
from portal.roles import Role
from portal.services import PortalError, role_assign, role_revoke

SALES = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
MARKETING = "OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com"
OTHER_ROLES = [role for role in Role if role is not Role.AUDITOR]
NON_ADMIN_ROLES = [role for role in Role if role is not Role.ADMIN]


@pytest.fixture
def admin(make_user):
    return make_user("root", Role.ADMIN)


def _last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-id").first()


def _roles_of(user) -> set[str]:
    return set(user.role_assignments.values_list("role__name", flat=True))


def _groups_of(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def _scopes_of(user, role: Role) -> set[str]:
    return set(RoleAssignment.objects.get(user=user, role__name=role).scopes.values_list("base_dn", flat=True))


# --- the audit event ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_assign_records_who_gave_what_to_whom_and_why(admin, make_user):
    bob = make_user("bob")
    role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=(SALES,), reason="joined the Sales helpdesk")
    event = _last_event()
    assert event.action == "portal.role.assigned"
    assert (event.actor, event.actor_name) == (admin, "root")
    assert (event.object_type, event.object_id, event.object_repr) == ("portal.user", str(bob.pk), "bob")
    assert event.before is None
    assert event.after == {"user": "bob", "role": "helpdesk", "tenant_wide": False, "scopes": [SALES]}
    assert event.reason == "joined the Sales helpdesk"


@pytest.mark.django_db
def test_revoke_records_the_assignment_it_removed(admin, make_user):
    bob = make_user("bob", Role.APPROVER)
    role_revoke(actor=admin, user=bob, role=Role.APPROVER, reason="left the team")
    event = _last_event()
    assert event.action == "portal.role.revoked"
    assert event.actor == admin
    assert event.object_id == str(bob.pk)
    assert event.before == {"user": "bob", "role": "approver", "tenant_wide": True, "scopes": []}
    assert event.after is None
    assert event.reason == "left the team"
    assert _roles_of(bob) == set()


@pytest.mark.django_db
def test_command_line_changes_are_recorded_as_the_system(make_user):
    bob = make_user("bob")
    role_assign(actor=None, user=bob, role=Role.APPROVER, tenant_wide=True)
    event = _last_event()
    assert (event.action, event.actor, event.actor_name) == ("portal.role.assigned", None, "system")


# --- who may change roles -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("actor_roles", [*[(role,) for role in NON_ADMIN_ROLES], ()], ids=[*NON_ADMIN_ROLES, "no-role"])
def test_only_an_administrator_may_assign_roles(make_user, actor_roles):
    actor = make_user("someone", *actor_roles)
    bob = make_user("bob")
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match="Only an administrator"):
        role_assign(actor=actor, user=bob, role=Role.HELPDESK, tenant_wide=True)
    assert _roles_of(bob) == set() and _groups_of(bob) == set()
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
@pytest.mark.parametrize("actor_roles", [*[(role,) for role in NON_ADMIN_ROLES], ()], ids=[*NON_ADMIN_ROLES, "no-role"])
def test_only_an_administrator_may_revoke_roles(make_user, actor_roles):
    actor = make_user("someone", *actor_roles)
    bob = make_user("bob", Role.APPROVER)
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match="Only an administrator"):
        role_revoke(actor=actor, user=bob, role=Role.APPROVER)
    assert _roles_of(bob) == {"approver"}
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_a_superuser_without_the_admin_role_may_not_assign_roles(make_user):
    root = User.objects.create_superuser("superroot", password="irrelevant-for-this-test")
    bob = make_user("bob")
    with pytest.raises(PortalError, match="Only an administrator"):
        role_assign(actor=root, user=bob, role=Role.HELPDESK, tenant_wide=True)
    with pytest.raises(PortalError, match="Only an administrator"):
        role_assign(actor=root, user=root, role=Role.ADMIN, tenant_wide=True)
    assert not RoleAssignment.objects.filter(user__in=[root, bob]).exists()


@pytest.mark.django_db
def test_a_deactivated_administrator_may_not_assign_roles(admin, make_user):
    bob = make_user("bob")
    admin.is_active = False
    admin.save(update_fields=["is_active"])
    with pytest.raises(PortalError, match="Only an administrator"):
        role_assign(actor=admin, user=bob, role=Role.HELPDESK, tenant_wide=True)
    assert _roles_of(bob) == set()


# --- separation of duties -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("other", OTHER_ROLES)
def test_an_auditor_cannot_be_given_another_role(admin, make_user, other):
    bob = make_user("bob", Role.AUDITOR)
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match=f"already holds the auditor role, which cannot be combined with {other}"):
        role_assign(actor=admin, user=bob, role=other, tenant_wide=True)
    assert _roles_of(bob) == {"auditor"} and _groups_of(bob) == {"auditor"}
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
@pytest.mark.parametrize("other", OTHER_ROLES)
def test_a_holder_of_another_role_cannot_become_an_auditor(admin, make_user, other):
    bob = make_user("bob", other)
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match=f"already holds the {other} role, which cannot be combined with auditor"):
        role_assign(actor=admin, user=bob, role=Role.AUDITOR, tenant_wide=True)
    assert _roles_of(bob) == {other.value}
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_roles_other_than_auditor_combine(admin, make_user):
    bob = make_user("bob", Role.HELPDESK)
    role_assign(actor=admin, user=bob, role=Role.WAVE_OPERATOR, tenant_wide=True)
    role_assign(actor=admin, user=bob, role=Role.APPROVER, tenant_wide=True)
    assert _roles_of(bob) == {"helpdesk", "wave_operator", "approver"}


@pytest.mark.django_db
def test_an_auditor_can_be_reassigned_the_auditor_role(admin, make_user):
    bob = make_user("bob", Role.AUDITOR)
    role_assign(actor=admin, user=bob, role=Role.AUDITOR, tenant_wide=True, reason="yearly review")
    assert _roles_of(bob) == {"auditor"}
    assert _last_event().reason == "yearly review"


@pytest.mark.django_db
def test_the_same_assignment_sent_twice_is_recorded_once_and_a_later_review_again(admin, make_user):
    bob = make_user("bob")
    role_assign(actor=admin, user=bob, role=Role.AUDITOR, tenant_wide=True, reason="ticket 7")
    role_assign(actor=admin, user=bob, role=Role.AUDITOR, tenant_wide=True, reason="ticket 7")  # the form resent
    assert AuditEvent.objects.filter(action="portal.role.assigned", object_id=str(bob.pk)).count() == 1
    role_assign(actor=admin, user=bob, role=Role.AUDITOR, tenant_wide=True, reason="yearly review")
    assert AuditEvent.objects.filter(action="portal.role.assigned", object_id=str(bob.pk)).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
def test_tenant_level_roles_cannot_be_limited_to_ous(admin, make_user, role):
    bob = make_user("bob")
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match=f"The {role} role acts on the whole tenant"):
        role_assign(actor=admin, user=bob, role=role, scopes=(SALES,))
    assert _roles_of(bob) == set()
    assert AuditEvent.objects.count() == events


# --- tenant-wide or scoped ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_tenant_wide_and_scopes_are_mutually_exclusive(admin, make_user):
    bob = make_user("bob")
    with pytest.raises(PortalError, match="cannot also list OU scopes"):
        role_assign(actor=admin, user=bob, role=Role.HELPDESK, tenant_wide=True, scopes=(SALES,))
    assert _roles_of(bob) == set()


@pytest.mark.django_db
@pytest.mark.parametrize("scopes", [(), ("",), ("   ", "\t")], ids=["none", "empty", "blank"])
def test_an_assignment_needs_a_scope_or_tenant_wide(admin, make_user, scopes):
    bob = make_user("bob")
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match="at least one OU scope"):
        role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=scopes)
    assert _roles_of(bob) == set()
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["garbage", "OU=", r"OU=Sales\FF,DC=corp"])
def test_an_invalid_scope_is_refused_naming_the_dn(admin, make_user, bad):
    bob = make_user("bob")
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match="OU scope rejected") as refused:
        role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=(SALES, bad))
    assert repr(bad) in str(refused.value)
    assert _roles_of(bob) == set() and _groups_of(bob) == set()
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_reassigning_replaces_the_scopes_and_records_before_and_after(admin, make_user):
    bob = make_user("bob")
    role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=(SALES,))
    role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=(MARKETING,), reason="moved to Marketing")
    assert _scopes_of(bob, Role.HELPDESK) == {MARKETING}
    assert RoleAssignment.objects.filter(user=bob).count() == 1
    event = _last_event()
    assert event.before == {"user": "bob", "role": "helpdesk", "tenant_wide": False, "scopes": [SALES]}
    assert event.after == {"user": "bob", "role": "helpdesk", "tenant_wide": False, "scopes": [MARKETING]}
    assert event.reason == "moved to Marketing"


@pytest.mark.django_db
def test_reassigning_tenant_wide_drops_the_scopes_and_back(admin, make_user):
    bob = make_user("bob")
    role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=(SALES, MARKETING))
    role_assign(actor=admin, user=bob, role=Role.HELPDESK, tenant_wide=True)
    assignment = RoleAssignment.objects.get(user=bob)
    assert assignment.tenant_wide and not assignment.scopes.exists()
    assert _last_event().after["tenant_wide"] is True and _last_event().before["scopes"] == sorted([SALES, MARKETING])
    role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=(SALES,))
    assignment.refresh_from_db()
    assert not assignment.tenant_wide and _scopes_of(bob, Role.HELPDESK) == {SALES}


@pytest.mark.django_db
def test_the_same_scope_spelled_twice_is_kept_once(admin, make_user):
    bob = make_user("bob")
    role_assign(
        actor=admin, user=bob, role=Role.HELPDESK, scopes=(SALES, " ou=sales , ou=corp,dc=CORP,dc=example,dc=com")
    )
    assert _scopes_of(bob, Role.HELPDESK) == {SALES}


# --- flags and groups kept in step ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_role_makes_staff_and_revoking_it_unmakes(admin, make_user):
    bob = make_user("bob")
    assert not bob.is_staff
    role_assign(actor=admin, user=bob, role=Role.ADMIN, tenant_wide=True)
    bob.refresh_from_db()
    assert bob.is_staff
    role_revoke(actor=admin, user=bob, role=Role.ADMIN)
    bob.refresh_from_db()
    assert not bob.is_staff


@pytest.mark.django_db
@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_roles_other_than_admin_do_not_make_staff(admin, make_user, role):
    bob = make_user("bob")
    role_assign(actor=admin, user=bob, role=role, tenant_wide=True)
    bob.refresh_from_db()
    assert not bob.is_staff


@pytest.mark.django_db
def test_an_administrator_cannot_revoke_their_own_admin_role(admin):
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match="cannot change your own roles"):
        role_revoke(actor=admin, user=admin, role=Role.ADMIN)
    admin.refresh_from_db()
    assert _roles_of(admin) == {"admin"} and admin.is_staff
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_another_administrator_can_revoke_an_admin_role(admin, make_user):
    other = make_user("other-admin", Role.ADMIN)
    role_revoke(actor=other, user=admin, role=Role.ADMIN, reason="rotation")
    assert _roles_of(admin) == set()
    assert _last_event().actor == other


@pytest.mark.django_db
def test_an_administrator_cannot_grant_themselves_a_role(admin):
    # Separation of duties: an administrator could otherwise make themselves the approver of their own changes.
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match="cannot change your own roles"):
        role_assign(actor=admin, user=admin, role=Role.APPROVER, tenant_wide=True)
    assert _roles_of(admin) == {"admin"}
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_revoking_a_role_not_held_is_an_error(admin, make_user):
    bob = make_user("bob", Role.HELPDESK)
    events = AuditEvent.objects.count()
    with pytest.raises(PortalError, match="bob does not hold the approver role"):
        role_revoke(actor=admin, user=bob, role=Role.APPROVER)
    assert _roles_of(bob) == {"helpdesk"}
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_group_membership_follows_the_assignments(admin, make_user):
    bob = make_user("bob")
    role_assign(actor=admin, user=bob, role=Role.HELPDESK, scopes=(SALES,))
    role_assign(actor=admin, user=bob, role=Role.APPROVER, tenant_wide=True)
    assert _groups_of(bob) == {"helpdesk", "approver"}
    role_revoke(actor=admin, user=bob, role=Role.HELPDESK)
    assert _groups_of(bob) == {"approver"} == _roles_of(bob)
    assert Group.objects.filter(name=Role.HELPDESK).exists()  # the role itself survives its last holder
