"""Signing in with Entra ID (portal.entra_signin) against the HTTPS emulator, with real msal, over the portal's URLs.

The browser's part (the authorize page, picking a person) is played with requests against the emulator; the portal's
part goes through Django's test client. Refusals are forced where they would happen in life: a forged redirect
(state), an authorize request whose nonce was swapped, and ID tokens the emulator breaks on purpose (its ``id_token``
fault: foreign signature, expired, another application's audience).
"""

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client

from portal.group_roles import group_mapping_save
from portal.models import AuditEvent, EntraAccount, GroupRoleMapping, RoleAssignment, User
from portal.roles import Action, Role, may
from portal.services import PortalError, role_assign, role_revoke

SALES = "OU=Sales,OU=People,DC=corp,DC=example,DC=com"
IN_SALES = f"CN=Someone,{SALES}"
ELSEWHERE = "CN=Other,OU=Finance,OU=People,DC=corp,DC=example,DC=com"


def signin_points_at(emulator, settings) -> None:
    """Point the portal's sign-in at the emulator's secret client (``settings``: pytest-django's, reset after)."""
    client = emulator.clients["secret"]
    settings.ENTRA_SIGNIN_ENABLED = True
    settings.ENTRA_AUTHORITY = emulator.authority
    settings.ENTRA_CLIENT_ID = client["client_id"]
    settings.ENTRA_CLIENT_SECRET_FILE = client["client_secret_file"]
    settings.ENTRA_CERTIFICATE_KEY_FILE = ""
    settings.EXO_CA_FILE = str(emulator.ca_file)
    settings.GRAPH_BASE_URL = emulator.base_url


@pytest.fixture
def entra(exo_clean, settings):
    """The portal's sign-in pointed at the emulator (faults and settings reset around the test)."""
    signin_points_at(exo_clean, settings)
    return exo_clean


def person(emulator, login: str) -> dict:
    return next(p for p in emulator.identities if p["preferred_username"].startswith(f"{login}@"))


def browser() -> Client:
    # The emulator sends browsers back to loopback addresses only, as a registered redirect URI would.
    return Client(HTTP_HOST="localhost")


def authorize_url(client: Client, next_url: str = "") -> str:
    response = client.get("/login/entra/" + (f"?next={next_url}" if next_url else ""))
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def pick(emulator, auth_uri: str, identity: dict, **changed: str) -> str:
    """Play the browser on the emulator's authorize page (with ``changed`` request parameters); the redirect back."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(auth_uri).query).items()}
    params.update(changed)
    endpoint = urlsplit(auth_uri)._replace(query="").geturl()
    with emulator.session() as session:
        answer = session.post(endpoint, data={**params, "identity": identity["oid"]}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text[:500]
    return answer.headers["Location"]


def come_back(client: Client, location: str, **changed: str):
    parts = urlsplit(location)
    assert parts.path == "/login/entra/callback/"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changed
    return client.get(parts.path + "?" + urlencode(query))


def sign_in(emulator, login: str, client: Client | None = None):
    client = client or browser()
    response = come_back(client, pick(emulator, authorize_url(client), person(emulator, login)))
    return client, response


def map_group(emulator, login: str, role: Role, *, scopes=(), name: str = "") -> GroupRoleMapping:
    return group_mapping_save(
        actor=None,
        group_id=person(emulator, login)["groups"][0],
        display_name=name or f"{login} group",
        role=role,
        tenant_wide=not scopes,
        scopes=scopes,
    )


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def last_failure() -> dict:
    return AuditEvent.objects.filter(action="portal.signin.failed").order_by("-id").first().after


@pytest.mark.django_db
def test_a_mapped_group_gives_its_role_and_scope_and_the_first_sign_in_creates_the_user(entra):
    map_group(entra, "helpdesk", Role.HELPDESK, scopes=[SALES])
    client, response = sign_in(entra, "helpdesk")
    assert response.status_code == 302 and response["Location"] == "/"
    assert signed_in(client)
    identity = person(entra, "helpdesk")
    user = User.objects.get(username=identity["preferred_username"])
    assert user.entra_account.object_id == identity["oid"] and not user.has_usable_password()
    assert user.entra_account.groups == identity["groups"]
    assignment = RoleAssignment.objects.get(user=user)
    assert (assignment.role.name, assignment.from_groups, assignment.tenant_wide) == ("helpdesk", True, False)
    assert may(user, Action.MAILBOX_EDIT, IN_SALES) and not may(user, Action.MAILBOX_EDIT, ELSEWHERE)
    assert not may(user, Action.PORTAL_CONFIGURE)
    assert client.get("/").status_code == 200
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-3:] == ["portal.user.created", "portal.role.assigned", "portal.signin.succeeded"]
    succeeded = AuditEvent.objects.get(action="portal.signin.succeeded")
    assert succeeded.actor == user and succeeded.after["method"] == "entra" and succeeded.after["roles"] == ["helpdesk"]


@pytest.mark.django_db
def test_roles_are_worked_out_again_at_every_sign_in(entra):
    mapping = map_group(entra, "operator", Role.WAVE_OPERATOR, scopes=[SALES])
    sign_in(entra, "operator")
    user = User.objects.get(entra_account__object_id=person(entra, "operator")["oid"])
    assert not may(user, Action.WAVE_BUILD, ELSEWHERE)

    group_mapping_save(actor=None, mapping=mapping, group_id=mapping.group_id, display_name="Operators",
                       role=Role.WAVE_OPERATOR, tenant_wide=True)  # fmt: skip
    assert not may(user, Action.WAVE_BUILD, ELSEWHERE)  # not before the next sign-in
    client, response = sign_in(entra, "operator")
    assert signed_in(client) and may(user, Action.WAVE_BUILD, ELSEWHERE)
    assert User.objects.filter(entra_account__isnull=False).count() == 1  # the same user, not a second one

    mapping.delete()
    client, response = sign_in(entra, "operator")
    assert response.status_code == 403 and not signed_in(client)
    assert not RoleAssignment.objects.filter(user=user).exists()
    revoked = AuditEvent.objects.filter(action="portal.role.revoked").latest("id")
    assert revoked.before["role"] == "wave_operator" and "Entra ID groups" in revoked.reason


@pytest.mark.django_db
def test_a_person_whose_groups_map_to_no_role_sees_the_no_access_page(entra):
    map_group(entra, "admin", Role.ADMIN)
    client, response = sign_in(entra, "visitor")
    assert response.status_code == 403
    page = response.content.decode()
    assert "No access to the SOA Portal" in page and "but none of your groups gives access" in page
    assert not signed_in(client)
    assert client.get("/").status_code == 302  # still sent to sign in
    assert User.objects.filter(username=person(entra, "visitor")["preferred_username"]).exists()
    assert last_failure()["outcome"] == "no access: no portal role for the user's groups"


@pytest.mark.django_db
def test_a_forged_state_is_refused(entra):
    map_group(entra, "admin", Role.ADMIN)
    client = browser()
    location = pick(entra, authorize_url(client), person(entra, "admin"))
    response = come_back(client, location, state="forged-state-value")
    assert response.status_code == 400 and "does not belong to the sign-in started here" in response.content.decode()
    assert not signed_in(client)
    assert last_failure()["outcome"].startswith("state refused")
    # The flow is spent: the genuine answer cannot be replayed after a refusal either.
    again = come_back(client, location)
    assert again.status_code == 400 and not signed_in(client)
    assert last_failure()["outcome"] == "no sign-in in progress in this session"


@pytest.mark.django_db
def test_an_id_token_for_another_nonce_is_refused(entra):
    map_group(entra, "admin", Role.ADMIN)
    client = browser()
    location = pick(entra, authorize_url(client), person(entra, "admin"), nonce="a-nonce-this-portal-never-sent")
    response = come_back(client, location)
    assert response.status_code == 400 and "could not be trusted" in response.content.decode()
    assert not signed_in(client)
    assert "nonce" in last_failure()["outcome"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ("signature", "ID token refused: signature does not verify"),
        ("expired", "ID token refused: expired"),
        ("audience", "ID token refused: issued to another application (audience)"),
        ("issuer", "ID token refused: issuer"),
    ],
)
def test_an_id_token_that_does_not_check_out_is_refused(entra, fault, outcome):
    map_group(entra, "admin", Role.ADMIN)
    entra.set_faults(id_token=fault)
    client, response = sign_in(entra, "admin")
    assert response.status_code == 400 and "could not be trusted" in response.content.decode()
    assert not signed_in(client)
    assert last_failure()["outcome"].startswith(outcome)
    assert not User.objects.filter(entra_account__isnull=False).exists()


@pytest.mark.django_db
def test_groups_past_the_token_limit_are_read_from_graph(entra):
    """The groups overage case. Learn, "How to get the signed-in user group list when a group overage claim is
    displayed in access tokens" and the access/ID token claims references: past 200 groups a JWT carries no groups
    claim but ``_claim_names`` {"groups": "src1"} and ``_claim_sources`` pointing at getMemberObjects; the app asks
    Microsoft Graph (``POST /v1.0/users/{id}/getMemberObjects``, Learn "user: getMemberObjects", application
    permission User.Read.All among others) for the groups instead."""
    map_group(entra, "auditor", Role.AUDITOR)
    entra.set_settings(groups_overage_limit=0)
    client, response = sign_in(entra, "auditor")
    assert response.status_code == 302 and signed_in(client)
    user = User.objects.get(entra_account__object_id=person(entra, "auditor")["oid"])
    assert may(user, Action.AUDIT_VIEW)
    assert user.entra_account.groups == person(entra, "auditor")["groups"]


@pytest.mark.django_db
def test_a_hand_granted_role_is_kept_and_an_incompatible_mix_is_refused(entra):
    map_group(entra, "approver", Role.APPROVER)
    sign_in(entra, "approver")
    user = User.objects.get(entra_account__object_id=person(entra, "approver")["oid"])
    role_assign(actor=None, user=user, role=Role.HELPDESK, scopes=[SALES])
    client, response = sign_in(entra, "approver")
    assert signed_in(client)
    held = dict(RoleAssignment.objects.filter(user=user).values_list("role__name", "from_groups"))
    assert held == {"approver": True, "helpdesk": False}

    # The mapping turned to auditor behind the service's back: the hand-granted helpdesk role cannot go with it.
    GroupRoleMapping.objects.filter(role__name="approver").update(role=_group("auditor"))
    client, response = sign_in(entra, "approver")
    assert response.status_code == 400 and "cannot be held together" in response.content.decode()
    assert last_failure()["outcome"] == "groups give roles that cannot be combined"
    assert dict(RoleAssignment.objects.filter(user=user).values_list("role__name", "from_groups")) == held


def _group(name):
    from django.contrib.auth.models import Group

    return Group.objects.get(name=name)


@pytest.mark.django_db
def test_a_local_account_with_the_same_name_is_never_taken_over(entra, make_user):
    map_group(entra, "admin", Role.ADMIN)
    make_user(person(entra, "admin")["preferred_username"], Role.HELPDESK)
    client, response = sign_in(entra, "admin")
    assert response.status_code == 400 and not signed_in(client)
    assert not EntraAccount.objects.exists()
    assert last_failure()["outcome"] == "the user name is taken by an account not linked to this Entra identity"


@pytest.mark.django_db
def test_the_sign_in_page_offers_entra_and_local_accounts_can_be_switched_off(entra, make_user, settings):
    page = browser().get("/login/").content.decode()
    assert "Sign in with Microsoft Entra ID" in page and 'name="password"' in page
    make_user("breakglass", Role.ADMIN)
    settings.LOCAL_SIGNIN_ENABLED = False
    client = browser()
    page = client.get("/login/").content.decode()
    assert "Sign in with Microsoft Entra ID" in page and 'name="password"' not in page
    from tests.conftest import PASSWORD

    response = client.post("/login/", {"username": "breakglass", "password": PASSWORD})
    assert "switched off" in response.content.decode() and not signed_in(client)
    assert last_failure()["outcome"] == "refused: local sign-in is switched off"


@pytest.mark.django_db
def test_entra_sign_in_without_configuration_is_not_offered(settings):
    settings.ENTRA_CLIENT_ID = ""
    client = browser()
    assert "Entra ID" not in client.get("/login/").content.decode()
    assert client.get("/login/entra/").status_code == 404


@pytest.mark.django_db
def test_sign_out_after_entra_sign_in_is_audited(entra):
    map_group(entra, "admin", Role.ADMIN)
    client, _ = sign_in(entra, "admin")
    client.post("/logout/")
    assert not signed_in(client)
    assert AuditEvent.objects.filter(action="portal.signin.signed_out").exists()


# -- role and scope administration -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_administrators_add_change_and_remove_group_mappings_with_audit(client, make_user):
    admin = make_user("root-admin", Role.ADMIN)
    client.force_login(admin)
    group = "6f1c1f8e-3a1b-4b8e-9a41-0c2d3e4f5a6b"
    fields = {"group_id": group.upper(), "display_name": "Sales help desk", "role": "helpdesk", "scopes": SALES,
              "reason": "ticket 1"}  # fmt: skip
    response = client.post("/roles/groups/add/", fields)
    assert response.status_code == 302
    mapping = GroupRoleMapping.objects.get()
    assert (mapping.group_id, mapping.scopes) == (group, [SALES])
    assert "Sales help desk" in client.get("/roles/groups/").content.decode()

    fields = {"group_id": group, "display_name": "Sales help desk", "role": "helpdesk", "tenant_wide": "on",
              "reason": "t2"}  # fmt: skip
    response = client.post(f"/roles/groups/{mapping.pk}/edit/", fields)
    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.tenant_wide and mapping.scopes == []

    bad = client.post("/roles/groups/add/", {"group_id": "not-a-guid", "display_name": "x", "role": "admin",
                                             "tenant_wide": "on", "reason": "r"})  # fmt: skip
    assert "is not an Entra group object id" in bad.content.decode()
    auditor = client.post("/roles/groups/add/", {"group_id": group, "display_name": "Sales help desk",
                                                 "role": "auditor", "tenant_wide": "on", "reason": "r"})  # fmt: skip
    assert "cannot be combined" in auditor.content.decode()

    assert client.post(f"/roles/groups/{mapping.pk}/remove/", {"reason": "t3"}).status_code == 302
    assert not GroupRoleMapping.objects.exists()
    events = AuditEvent.objects.filter(action__startswith="portal.group_mapping.").order_by("id")
    assert [(e.action, e.actor_id, e.reason) for e in events] == [
        ("portal.group_mapping.created", admin.pk, "ticket 1"),
        ("portal.group_mapping.changed", admin.pk, "t2"),
        ("portal.group_mapping.removed", admin.pk, "t3"),
    ]


@pytest.mark.django_db
def test_only_administrators_reach_group_mappings(client, make_user):
    client.force_login(make_user("helper", Role.HELPDESK, scopes=(SALES,)))
    assert client.get("/roles/groups/").status_code == 403
    response = client.post("/roles/groups/add/", {"group_id": "6f1c1f8e-3a1b-4b8e-9a41-0c2d3e4f5a6b",
                                                  "display_name": "x", "role": "admin", "tenant_wide": "on",
                                                  "reason": "r"})  # fmt: skip
    assert response.status_code == 403 and not GroupRoleMapping.objects.exists()


@pytest.mark.django_db
def test_nobody_changes_the_mapping_of_a_group_they_belong_to(entra, make_user):
    mapping = map_group(entra, "admin", Role.ADMIN)
    sign_in(entra, "admin")
    me = User.objects.get(entra_account__object_id=person(entra, "admin")["oid"])
    with pytest.raises(PortalError, match="member of this group"):
        group_mapping_save(actor=me, mapping=mapping, group_id=mapping.group_id, display_name="x",
                           role=Role.ADMIN, tenant_wide=True, reason="mine")  # fmt: skip
    other = make_user("other-admin", Role.ADMIN)
    group_mapping_save(actor=other, mapping=mapping, group_id=mapping.group_id, display_name="Admins",
                       role=Role.ADMIN, tenant_wide=True, reason="rename")  # fmt: skip


@pytest.mark.django_db
def test_the_last_administrator_cannot_be_removed(make_user):
    first = make_user("first-admin", Role.ADMIN)
    second = make_user("second-admin", Role.ADMIN)
    role_revoke(actor=first, user=second, role=Role.ADMIN, reason="leaving")
    third = make_user("third-admin", Role.HELPDESK)
    with pytest.raises(PortalError, match="last administrator"):
        role_revoke(actor=None, user=first, role=Role.ADMIN, reason="oops")
    assert may(first, Action.PORTAL_CONFIGURE)
    role_assign(actor=first, user=third, role=Role.ADMIN, tenant_wide=True)
    role_revoke(actor=third, user=first, role=Role.ADMIN, reason="handed over")
    assert not may(first, Action.PORTAL_CONFIGURE)


@pytest.mark.django_db
def test_an_administrators_grant_of_a_group_held_role_becomes_their_own(entra, make_user):
    mapping = map_group(entra, "operator", Role.WAVE_OPERATOR, scopes=[SALES])
    sign_in(entra, "operator")
    user = User.objects.get(entra_account__object_id=person(entra, "operator")["oid"])
    role_assign(actor=make_user("grantor", Role.ADMIN), user=user, role=Role.WAVE_OPERATOR, tenant_wide=True,
                reason="runs every wave")  # fmt: skip
    granted = AuditEvent.objects.filter(action="portal.role.assigned").latest("id")
    assert granted.before["from_groups"] is True and "from_groups" not in granted.after
    mapping.delete()
    client, _ = sign_in(entra, "operator")
    assert signed_in(client) and may(user, Action.WAVE_BUILD, ELSEWHERE)


@pytest.mark.django_db
def test_the_last_administrator_keeps_the_role_when_their_group_stops_giving_it(entra):
    mapping = map_group(entra, "admin", Role.ADMIN)
    sign_in(entra, "admin")
    user = User.objects.get(entra_account__object_id=person(entra, "admin")["oid"])
    mapping.delete()
    client, response = sign_in(entra, "admin")
    assert signed_in(client) and may(user, Action.PORTAL_CONFIGURE)
    kept = AuditEvent.objects.get(action="portal.role.kept")
    assert kept.after["role"] == "admin" and "last administrator" in kept.reason


@pytest.mark.django_db
def test_the_page_asked_for_before_signing_in_is_opened_after_it(entra):
    map_group(entra, "admin", Role.ADMIN)
    client = browser()
    location = pick(entra, authorize_url(client, next_url="/roles/groups/"), person(entra, "admin"))
    assert come_back(client, location)["Location"] == "/roles/groups/"
    elsewhere = pick(entra, authorize_url(client, next_url="https://evil.example.com/"), person(entra, "admin"))
    assert come_back(client, elsewhere)["Location"] == "/"


@pytest.mark.django_db
def test_entra_out_of_reach_gets_a_clear_page_not_an_error(entra, settings):
    settings.ENTRA_AUTHORITY = f"https://127.0.0.1:1/{entra.tenant_id}"
    response = browser().get("/login/entra/")
    assert response.status_code == 503 and "cannot be reached just now" in response.content.decode()
    assert last_failure()["outcome"].startswith("cannot set up msal")


@pytest.mark.django_db
def test_an_error_sent_back_by_entra_is_shown_and_audited(entra):
    client = browser()
    auth_uri = authorize_url(client)
    state = parse_qs(urlsplit(auth_uri).query)["state"][0]
    declined = {"error": "access_denied", "error_description": "AADSTS65004: User declined to consent."}
    response = client.get("/login/entra/callback/", {**declined, "state": state})
    assert response.status_code == 400 and "AADSTS65004" in response.content.decode() and not signed_in(client)
    assert last_failure()["outcome"].startswith("Entra ID answered access_denied")
    # An error that does not come back with this sign-in's state is not shown: anyone could make such a link.
    authorize_url(client)
    forged = client.get("/login/entra/callback/", {**declined, "error_description": "Call 555-0100", "state": "x"})
    assert forged.status_code == 400 and "555-0100" not in forged.content.decode()
    assert last_failure()["outcome"].startswith("state refused")


@pytest.mark.django_db
def test_the_roles_page_shows_who_can_act_where_for_people_and_groups(client, make_user):
    admin = make_user("overview-admin", Role.ADMIN)
    make_user("sales-helper", Role.HELPDESK, scopes=(SALES,))
    group_mapping_save(actor=None, group_id="6f1c1f8e-3a1b-4b8e-9a41-0c2d3e4f5a6b", display_name="Sales desk group",
                       role=Role.HELPDESK, scopes=[SALES])  # fmt: skip
    client.force_login(admin)
    page = client.get("/roles/").content.decode()
    overview = page[page.index("Who can act where") :]
    assert overview.index("Tenant-wide") < overview.index(SALES)
    sales_row = overview[overview.index(SALES) :]
    assert "sales-helper" in sales_row and "Sales desk group" in sales_row
