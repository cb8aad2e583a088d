"""Signing in with Entra ID in Chromium, through the HTTPS emulator's authorize page and back to the portal.

The browser does what a person's browser does: the portal's button, the emulator's page (its CA is not the system's,
hence ignore_https_errors), a person picked, the redirect back. Tampering happens in the browser too: the state or
nonce the portal put in the authorize request is rewritten on the emulator's page before the person is picked. Broken
ID tokens come from the emulator's ``id_token`` fault.
"""

import pytest

from portal.group_roles import group_mapping_save
from portal.models import AuditEvent, User
from portal.roles import Action, Role, may
from tests.browser.conftest import ARTIFACTS, serious_violations
from tests.portal.test_entra_signin import person, signin_points_at

pytestmark = pytest.mark.browser

SALES = "OU=Sales,OU=People,DC=corp,DC=example,DC=com"


@pytest.fixture
def entra(exo_clean, settings):
    """The portal's sign-in pointed at the emulator (as in the portal's tests), with two groups mapped."""
    signin_points_at(exo_clean, settings)
    for login, role, scopes in (("helpdesk", Role.HELPDESK, [SALES]), ("admin", Role.ADMIN, [])):
        group_mapping_save(actor=None, group_id=person(exo_clean, login)["groups"][0], display_name=f"{login} group",
                           role=role, tenant_wide=not scopes, scopes=scopes)  # fmt: skip
    return exo_clean


@pytest.fixture
def tab(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
    yield context.new_page()
    context.close()


def to_the_emulator(tab, live_server, emulator) -> None:
    tab.goto(live_server.url + "/login/")
    tab.get_by_role("link", name="Sign in with Microsoft Entra ID").click()
    tab.wait_for_url(emulator.base_url + "/**")
    assert tab.get_by_role("heading", name="Pick an account").is_visible()


def pick(tab, emulator, login: str, **rewritten: str) -> None:
    for name, value in rewritten.items():
        tab.locator(f"input[type=hidden][name={name}]").evaluate("(input, value) => { input.value = value; }", value)
    tab.get_by_role("button", name=person(emulator, login)["name"]).click()
    tab.wait_for_load_state()


def outcome() -> str:
    return AuditEvent.objects.filter(action="portal.signin.failed").latest("id").after["outcome"]


def shot(tab, name: str) -> None:
    folder = ARTIFACTS / "entra_signin"
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_a_mapped_group_signs_in_with_its_role_and_scope(entra, live_server, tab):
    tab.goto(live_server.url + "/login/")
    shot(tab, "sign-in-page")
    to_the_emulator(tab, live_server, entra)
    pick(tab, entra, "helpdesk")
    tab.wait_for_url(live_server.url + "/")
    identity = person(entra, "helpdesk")
    assert tab.get_by_test_id("username").inner_text() == identity["preferred_username"]
    assert "helpdesk" in tab.locator(".whoami .roles").inner_text()
    user = User.objects.get(entra_account__object_id=identity["oid"])
    assert may(user, Action.MAILBOX_EDIT, f"CN=A,{SALES}") and not may(user, Action.MAILBOX_EDIT, "CN=B,DC=corp")
    shot(tab, "signed-in-as-helpdesk")
    assert tab.goto(live_server.url + "/roles/groups/").status == 403  # a help desk role configures nothing

    tab.get_by_role("button", name="Sign out").click()
    assert AuditEvent.objects.filter(action="portal.signin.signed_out", actor=user).exists()


def test_an_unmapped_person_sees_the_no_access_page(entra, live_server, tab, axe_source):
    to_the_emulator(tab, live_server, entra)
    pick(tab, entra, "visitor")
    assert tab.get_by_role("heading", name="No access to the SOA Portal").is_visible()
    for width in (1280, 390):
        tab.set_viewport_size({"width": width, "height": 900})
        shot(tab, f"no-access-{width}")
        assert serious_violations(tab, axe_source) == []
    tab.goto(live_server.url + "/")
    assert tab.url.startswith(live_server.url + "/login/")
    assert outcome() == "no access: no portal role for the user's groups"


@pytest.mark.parametrize("field", ["state", "nonce"])
def test_a_state_or_nonce_rewritten_in_the_browser_is_refused(entra, live_server, tab, field):
    to_the_emulator(tab, live_server, entra)
    pick(tab, entra, "admin", **{field: "rewritten-in-the-browser"})
    assert tab.get_by_role("heading", name="You were not signed in").is_visible()
    assert field in outcome()
    tab.goto(live_server.url + "/")
    assert tab.url.startswith(live_server.url + "/login/")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("signature", "signature does not verify"), ("expired", "expired"), ("audience", "audience")],
)
def test_a_forged_expired_or_misaddressed_id_token_is_refused(entra, live_server, tab, axe_source, fault, expected):
    entra.set_faults(id_token=fault)
    to_the_emulator(tab, live_server, entra)
    pick(tab, entra, "admin")
    assert tab.get_by_role("heading", name="You were not signed in").is_visible()
    assert expected in outcome()
    shot(tab, f"refused-{fault}")
    assert serious_violations(tab, axe_source) == []
    assert not User.objects.filter(entra_account__isnull=False).exists()
