"""Who may do what, and where: may(), scope_filter(), granted_actions() and the mailbox selectors built on them."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group

from portal.dn import normalize_dn
from portal.models import RoleAssignment, RoleScope, User
from portal.roles import (
    ROLE_ACTIONS,
    TENANT_ACTIONS,
    TENANT_WIDE_ROLES,
    Action,
    Role,
    granted_actions,
    may,
    scope_filter,
    user_roles,
)
from portal.services import role_assign
from soa.choices import Authority
from soa.models import Mailbox
from soa.selectors import mailbox_counts, mailbox_list

SALES = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
INSIDE_SALES = "CN=Alice Able,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
OUTSIDE_SALES = "CN=Bob Baker,OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com"


def _mailbox(dn: str, authority: str = Authority.ON_PREM) -> Mailbox:
    return Mailbox.objects.create(
        dn=dn, dn_norm=normalize_dn(dn) if dn else "", upn="someone@example.com", authority=authority
    )


def _allowed(user, action: Action) -> set[str]:
    return set(Mailbox.objects.filter(scope_filter(user, action, "dn_norm")).values_list("dn", flat=True))


# --- may(): every role, every action --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("dn", [None, INSIDE_SALES], ids=["anywhere", "on-a-dn"])
def test_tenant_wide_role_may_exactly_its_actions(make_user, role, dn):
    user = make_user("holder", role)
    answers = {action: may(user, action, dn) for action in Action}
    assert {action for action, allowed in answers.items() if allowed} == ROLE_ACTIONS[role]


SCOPABLE_ROLES = [role for role in Role if role not in TENANT_WIDE_ROLES]


@pytest.mark.django_db
@pytest.mark.parametrize("role", SCOPABLE_ROLES)
def test_scoped_role_may_its_actions_inside_its_scope_and_nothing_outside(make_user, role):
    user = make_user("holder", role, scopes=(SALES,))
    assert {action for action in Action if may(user, action, INSIDE_SALES)} == ROLE_ACTIONS[role]
    assert {action for action in Action if may(user, action)} == ROLE_ACTIONS[role]
    assert not any(may(user, action, OUTSIDE_SALES) for action in Action)


def _assignment(user, role, *, tenant_wide=False, scopes=()):
    """Write an assignment straight to the database, around role_assign's rules (a hand-edited row, say)."""
    assignment = RoleAssignment.objects.create(user=user, role=Group.objects.get(name=role), tenant_wide=tenant_wide)
    for dn in scopes:
        RoleScope.objects.create(assignment=assignment, base_dn=dn, base_dn_norm=normalize_dn(dn))
    return assignment


@pytest.mark.django_db
def test_an_assignment_without_scope_or_tenant_flag_grants_nothing(make_user):
    user = make_user("holder")
    _assignment(user, Role.ADMIN)
    assert not any(may(user, action) for action in Action)
    assert granted_actions(user) == set()


@pytest.mark.django_db
def test_tenant_level_actions_need_a_tenant_wide_assignment(make_user):
    user = make_user("holder")
    _assignment(user, Role.AUDITOR, scopes=(SALES,))
    assert not any(may(user, action) for action in TENANT_ACTIONS)
    assert granted_actions(user) == ROLE_ACTIONS[Role.AUDITOR] - TENANT_ACTIONS
    assert may(user, Action.MAILBOX_VIEW, INSIDE_SALES)


@pytest.mark.django_db
@pytest.mark.parametrize("dn", ["", "not a dn", "CN=\\FF,OU=x"])
def test_malformed_dn_is_outside_every_scope(make_user, dn):
    scoped = make_user("scoped", Role.HELPDESK, scopes=(SALES,))
    wide = make_user("wide", Role.HELPDESK)
    assert may(scoped, Action.MAILBOX_EDIT, dn) is False
    assert may(wide, Action.MAILBOX_EDIT, dn) is True


def test_role_table_covers_every_role_and_grants_only_known_actions():
    assert set(ROLE_ACTIONS) == set(Role)
    assert all(actions <= set(Action) and actions for actions in ROLE_ACTIONS.values())


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
def test_role_group_in_database_carries_exactly_the_role_table(role):
    # may() reads the groups' permissions, so the groups (migration 0003) must match ROLE_ACTIONS.
    codenames = set(Group.objects.get(name=role).permissions.values_list("codename", flat=True))
    assert codenames == {action.value for action in ROLE_ACTIONS[role]}


# --- OU scopes ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "dn",
    [
        INSIDE_SALES,
        "cn=alice able,ou=sales,ou=corp,dc=corp,dc=example,dc=com",
        "CN=ALICE ABLE,OU=SALES,OU=CORP,DC=CORP,DC=EXAMPLE,DC=COM",
        "CN=Alice Able , OU = Sales , OU=Corp, DC=corp,DC=example,DC=com",
        r"CN=Alice Able,OU=\53ales,OU=Corp,DC=corp,DC=example,DC=com",
        r"CN=Able\, Alice,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com",
        r"CN=Able\2C Alice,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com",
        "CN=Deep,OU=EMEA,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com",
        SALES,
    ],
    ids=["as-written", "lower", "upper", "spaces", "hex-escaped", "escaped-comma", "hex-comma", "nested", "the-ou"],
)
def test_scoped_helpdesk_may_edit_a_mailbox_inside_its_ou_however_the_dn_is_spelled(make_user, dn):
    helpdesk = make_user("helen", Role.HELPDESK, scopes=(SALES,))
    assert may(helpdesk, Action.MAILBOX_EDIT, dn)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "dn",
    [
        OUTSIDE_SALES,
        "CN=Carol,OU=PreSales,OU=Corp,DC=corp,DC=example,DC=com",
        "CN=Carol,OU=Sales,DC=corp,DC=example,DC=com",
        "CN=Carol,OU=Sales,OU=Corp,DC=other,DC=example,DC=com",
        "OU=Corp,DC=corp,DC=example,DC=com",
        # A CN whose unescaped text spells the scope: a string suffix test on unescaped values would match it.
        r"CN=x\,OU\=Sales,OU=Corp,DC=corp,DC=example,DC=com",
        r"CN=x\2COU\3DSales,OU=Corp,DC=corp,DC=example,DC=com",
        r"CN=x\,OU\=Sales\,OU\=Corp\,DC\=corp\,DC\=example\,DC\=com",
    ],
    ids=["sibling-ou", "presales", "other-parent", "other-domain", "parent", "cn-comma", "cn-hex-comma", "one-rdn"],
)
def test_scoped_helpdesk_may_not_edit_a_mailbox_outside_its_ou(make_user, dn):
    helpdesk = make_user("helen", Role.HELPDESK, scopes=(SALES,))
    assert not may(helpdesk, Action.MAILBOX_EDIT, dn)


@pytest.mark.django_db
def test_scope_given_in_another_spelling_matches_the_same_subtree(make_user):
    helpdesk = make_user("helen", Role.HELPDESK, scopes=(r"ou=SALES , ou=corp,DC=Corp,dc=Example,DC=COM",))
    assert may(helpdesk, Action.MAILBOX_EDIT, INSIDE_SALES)
    assert not may(helpdesk, Action.MAILBOX_EDIT, OUTSIDE_SALES)


@pytest.mark.django_db
def test_several_scopes_each_grant_their_subtree(make_user):
    marketing = "OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com"
    helpdesk = make_user("helen", Role.HELPDESK, scopes=(SALES, marketing))
    assert may(helpdesk, Action.MAILBOX_EDIT, INSIDE_SALES)
    assert may(helpdesk, Action.MAILBOX_EDIT, OUTSIDE_SALES)
    assert not may(helpdesk, Action.MAILBOX_EDIT, "CN=Dan,OU=IT,OU=Corp,DC=corp,DC=example,DC=com")


@pytest.mark.django_db
def test_scope_of_one_role_does_not_extend_another_roles_actions(make_user):
    user = make_user("mixed")
    role_assign(actor=None, user=user, role=Role.HELPDESK, scopes=(SALES,))
    role_assign(actor=None, user=user, role=Role.APPROVER, tenant_wide=True)
    assert may(user, Action.MAILBOX_VIEW, OUTSIDE_SALES)  # approver, tenant-wide
    assert not may(user, Action.MAILBOX_EDIT, OUTSIDE_SALES)  # helpdesk, Sales only
    assert may(user, Action.MAILBOX_EDIT, INSIDE_SALES)


# --- people who may nothing -----------------------------------------------------------------------------------


def _may_anything(user) -> bool:
    return any(may(user, action, dn) for action in Action for dn in (None, INSIDE_SALES))


@pytest.mark.django_db
def test_inactive_user_may_nothing_whatever_roles_they_hold(make_user):
    user = make_user("gone", Role.ADMIN)
    _mailbox(INSIDE_SALES)
    assert may(user, Action.MAILBOX_VIEW, INSIDE_SALES)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert not _may_anything(user)
    assert granted_actions(user) == set()
    assert user_roles(user) == set()
    assert _allowed(user, Action.MAILBOX_VIEW) == set()


@pytest.mark.django_db
def test_anonymous_and_missing_users_may_nothing():
    assert not _may_anything(AnonymousUser())
    assert not _may_anything(None)
    assert granted_actions(AnonymousUser()) == set()
    assert user_roles(None) == set()


@pytest.mark.django_db
def test_user_without_a_role_may_nothing(make_user):
    user = make_user("newcomer")
    assert not _may_anything(user)
    assert granted_actions(user) == set()


@pytest.mark.django_db
def test_django_superuser_without_a_role_may_nothing():
    root = User.objects.create_superuser("root", password="irrelevant-for-this-test")
    assert root.has_perm("portal.portal_configure")  # Django itself would let a superuser do anything...
    assert not _may_anything(root)  # ...the portal asks its roles only.
    assert granted_actions(root) == set()


@pytest.mark.django_db
def test_assignment_with_neither_scope_nor_tenant_wide_reaches_no_object(make_user):
    # Only the ORM can create one (role_assign refuses); it must fail closed rather than mean "everywhere".
    user = make_user("careless")
    RoleAssignment.objects.create(user=user, role=Group.objects.get(name=Role.HELPDESK))
    _mailbox(INSIDE_SALES)
    assert not may(user, Action.MAILBOX_EDIT, INSIDE_SALES)
    assert _allowed(user, Action.MAILBOX_EDIT) == set()


# --- scope_filter() on real querysets -------------------------------------------------------------------------

SPECIAL_OU = "OU=Sales_EU 100%,OU=Corp,DC=corp,DC=example,DC=com"
ESCAPED_OU = r"OU=Sales\, Partners,OU=Corp,DC=corp,DC=example,DC=com"


@pytest.fixture
def mailboxes(db) -> dict[str, str]:
    """Mailboxes in and around the Sales OU, by a short name, each mapped to its DN."""
    dns = {
        "in_sales": INSIDE_SALES,
        "in_sales_nested": "CN=Deep,OU=EMEA,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com",
        "in_sales_shouting": "CN=LOUD,OU=SALES,OU=CORP,DC=CORP,DC=EXAMPLE,DC=COM",
        "marketing": OUTSIDE_SALES,
        "presales": "CN=Carol,OU=PreSales,OU=Corp,DC=corp,DC=example,DC=com",
        "cn_spells_scope": r"CN=x\,OU\=Sales,OU=Corp,DC=corp,DC=example,DC=com",
        # If % or _ in a scope were LIKE wildcards, a scope on SPECIAL_OU would also match these two.
        "special": "CN=Eve,OU=Sales_EU 100%,OU=Corp,DC=corp,DC=example,DC=com",
        "wildcard_bait": "CN=Frank,OU=SalesXEU 100 percent,OU=Corp,DC=corp,DC=example,DC=com",
        "escaped": r"CN=Gina,OU=Sales\2C Partners,OU=Corp,DC=corp,DC=example,DC=com",
        "no_dn": "",
    }
    for dn in dns.values():
        _mailbox(dn)
    return dns


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
def test_tenant_wide_role_sees_every_mailbox_for_its_actions_and_none_for_others(make_user, mailboxes, role):
    user = make_user("holder", role)
    for action in Action:
        expected = set(mailboxes.values()) if action in ROLE_ACTIONS[role] else set()
        assert _allowed(user, action) == expected, action


@pytest.mark.django_db
@pytest.mark.parametrize("role", SCOPABLE_ROLES)
def test_scoped_role_sees_only_its_subtree_for_its_actions_and_none_for_others(make_user, mailboxes, role):
    user = make_user("holder", role, scopes=(SALES,))
    subtree = {mailboxes[name] for name in ("in_sales", "in_sales_nested", "in_sales_shouting")}
    for action in Action:
        assert _allowed(user, action) == (subtree if action in ROLE_ACTIONS[role] else set()), action


@pytest.mark.django_db
def test_user_without_a_grant_sees_no_mailbox(make_user, mailboxes):
    user = make_user("newcomer")
    assert all(_allowed(user, action) == set() for action in Action)
    assert not mailbox_list(user=user).exists()


@pytest.mark.django_db
def test_percent_and_underscore_in_a_scope_are_not_like_wildcards(make_user, mailboxes):
    user = make_user("holder", Role.HELPDESK, scopes=(SPECIAL_OU,))
    assert _allowed(user, Action.MAILBOX_EDIT) == {mailboxes["special"]}


@pytest.mark.django_db
def test_scope_with_an_escaped_comma_matches_its_subtree_in_sql(make_user, mailboxes):
    # The normal form holds a backslash (\2c); the database's LIKE must treat it as a plain character.
    user = make_user("holder", Role.HELPDESK, scopes=(ESCAPED_OU,))
    assert _allowed(user, Action.MAILBOX_EDIT) == {mailboxes["escaped"]}
    assert may(user, Action.MAILBOX_EDIT, mailboxes["escaped"])


@pytest.mark.django_db
def test_scope_filter_and_may_agree_on_every_mailbox(make_user, mailboxes):
    user = make_user("holder", Role.HELPDESK, scopes=(SALES, SPECIAL_OU))
    allowed = _allowed(user, Action.MAILBOX_EDIT)
    for dn in mailboxes.values():
        if dn:  # may() needs a DN to place the object; the queryset simply leaves DN-less rows out
            assert may(user, Action.MAILBOX_EDIT, dn) is (dn in allowed), dn


@pytest.mark.django_db
def test_mailbox_list_is_limited_to_the_scope(make_user, mailboxes):
    helpdesk = make_user("helen", Role.HELPDESK, scopes=(SALES,))
    listed = set(mailbox_list(user=helpdesk).values_list("dn", flat=True))
    assert listed == {mailboxes[name] for name in ("in_sales", "in_sales_nested", "in_sales_shouting")}


# --- mailbox_counts() -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_mailbox_counts_total_by_authority_within_the_users_reach(make_user):
    for dn, authority in [
        ("CN=s1,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com", Authority.CLOUD),
        ("CN=s2,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com", Authority.CLOUD),
        ("CN=s3,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com", Authority.ON_PREM),
        ("CN=m1,OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com", Authority.CLOUD),
        ("CN=m2,OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com", Authority.ON_PREM),
        ("CN=m3,OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com", Authority.ON_PREM),
    ]:
        _mailbox(dn, authority)
    scoped = make_user("helen", Role.HELPDESK, scopes=(SALES,))
    tenant_wide = make_user("wendy", Role.WAVE_OPERATOR)
    nobody = make_user("newcomer")
    assert mailbox_counts(user=scoped) == {"total": 3, "cloud": 2, "on_prem": 1, "drifted": 0}
    assert mailbox_counts(user=tenant_wide) == {"total": 6, "cloud": 3, "on_prem": 3, "drifted": 0}
    assert mailbox_counts(user=nobody) == {"total": 0, "cloud": 0, "on_prem": 0, "drifted": 0}


# --- granted_actions() and user_roles() -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
def test_granted_actions_are_the_roles_actions(make_user, role):
    user = make_user("holder", role)
    assert granted_actions(user) == ROLE_ACTIONS[role]
    assert user_roles(user) == {role.value}


@pytest.mark.django_db
def test_granted_actions_of_two_roles_are_their_union_in_one_query(make_user, django_assert_num_queries):
    user = make_user("both", Role.HELPDESK, Role.APPROVER)
    with django_assert_num_queries(1):
        granted = granted_actions(user)
    assert granted == ROLE_ACTIONS[Role.HELPDESK] | ROLE_ACTIONS[Role.APPROVER]
    assert user_roles(user) == {"helpdesk", "approver"}


@pytest.mark.django_db
def test_scoped_grant_still_counts_as_granted(make_user):
    # granted_actions answers "anywhere?", which drives navigation; the scope limits the objects, not the page.
    user = make_user("helen", Role.HELPDESK, scopes=(SALES,))
    assert granted_actions(user) == ROLE_ACTIONS[Role.HELPDESK]
