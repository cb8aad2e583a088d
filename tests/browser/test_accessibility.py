"""Every main page, as each role that sees it, passes axe-core with no serious or critical violation, at a desktop's
width and a phone's (390 px); on a phone the navigation collapses behind its Menu button and no page scrolls
sideways; the skip link leads to the content; a live search's count is a live region.

axe-core comes from the npm registry (`make test-packages` installs the pinned version into var/npm). Its script is
run through Playwright's evaluate (the DevTools protocol), which the portal's Content-Security-Policy does not
govern, so the pages keep their policy (no bypass_csp) and the test still fails on any policy violation.
"""

import pytest
from django.utils import timezone

from portal.group_roles import group_mapping_save
from portal.roles import Role
from soa.models import PrerequisiteCheck, TenantDefaultRequest
from tests.browser.conftest import ARTIFACTS, serious_violations
from tests.soa.test_undo import applied_edit
from tests.soa.test_wave_support import FINANCE, make_mailbox, submitted_wave

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)
# Beyond each role's navigation: the pages reached from it, and the error pages a role meets.
EXTRA_PAGES = {
    Role.HELPDESK: [
        "/mailboxes/{ann}/",
        "/mailboxes/{finn}/",
        "/roles/",
        "/audit/events/{edit}/undo/",
        "/mailboxes/{ann}/history/",
    ],
    Role.WAVE_OPERATOR: [
        "/waves/{wave}/",
        "/waves/new/",
        "/mailboxes/{ann}/",
        "/mailboxes/{ann}/history/",
        "/mailboxes/readiness/tenant-default/",
    ],
    Role.APPROVER: ["/waves/{wave}/", "/mailboxes/readiness/tenant-default/"],
    Role.AUDITOR: [
        "/mailboxes/{ann}/",
        "/waves/{wave}/",
        "/mailboxes/{ann}/history/",
        "/mailboxes/{ann}/history/as-of/?at={now}",
        "/mailboxes/{ann}/history/as-of/?at=2999-01-01",
        "/mailboxes/{ann}/history/compare/?earlier=2020-01-01&later={now}",
        "/mailboxes/readiness/report/",
        "/mailboxes/readiness/tenant-default/",
    ],
    Role.ADMIN: [
        "/mailboxes/{ann}/",
        "/settings/sign-in-locks/",
        "/roles/groups/",
        "/roles/groups/{mapping}/edit/",
        "/roles/groups/{mapping}/remove/",
        "/no/such/page/",
        "/audit/events/{edit}/undo/",
        "/audit/correlations/{correlation}/undo/",
        "/mailboxes/{ann}/history/",
        "/mailboxes/readiness/tenant-default/",
    ],
}
LISTEN = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def tenant(make_user):
    ann, abe = make_mailbox("Ann Archer"), make_mailbox("Abe Adams", aliases=("team-abe@corp.example.com",))
    finn = make_mailbox("Finn Fisher", FINANCE)
    operator = make_user("olga", Role.WAVE_OPERATOR)
    wave = submitted_wave(operator, ann, abe)
    mapping = group_mapping_save(actor=None, group_id="6f1c1f8e-3a1b-4b8e-9a41-0c2d3e4f5a6b", display_name="Sales desk",
                                 role=Role.HELPDESK, scopes=["OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"])  # fmt: skip
    edit = applied_edit(make_user("edna", Role.HELPDESK), ann)
    # The readiness page's prerequisites in each state they can show (met, not met with its fix, unknown with an error).
    PrerequisiteCheck.objects.create(key="connect_sync", status="met", measured="Last synced 10 minutes ago.",
                                     source="Microsoft Graph GET /v1.0/organization")  # fmt: skip
    PrerequisiteCheck.objects.create(
        key="exchange_role",
        status="not_met",
        measured="Exchange Online refused the app.",
        evidence={"canary": "ann.archer@corp.example.com", "exchange_error": "denied"},
    )
    PrerequisiteCheck.objects.create(key="writeback", status="unknown", measured="The source could not be read.",
                                     error="search failed: the directory did not answer")  # fmt: skip
    # A switch of the tenant default awaiting approval: approvers see the typed confirmation, administrators its cancel.
    TenantDefaultRequest.objects.create(tenant_name="corp.onmicrosoft.com", reason="all moved",
                                        property_name="BlockExchangeProvisioningFromOnPremEnabled",
                                        requested_by=make_user("tara", Role.ADMIN))  # fmt: skip
    return {
        "ann": ann.pk,
        "finn": finn.pk,
        "wave": wave.pk,
        "mapping": mapping.pk,
        "edit": edit.pk,
        "correlation": edit.correlation_id,
        "now": timezone.now().strftime("%Y-%m-%dT%H:%M:%S"),
    }


@pytest.mark.parametrize("role", list(Role))
def test_every_page_of_each_role_passes_axe_at_desktop_and_phone_widths(
    role, live_server, page, make_user, sign_in, tenant, axe_source
):
    username = "olga" if role == Role.WAVE_OPERATOR else f"{role}-user"
    if role != Role.WAVE_OPERATOR:
        scopes = ("OU=Sales,OU=Corp,DC=corp,DC=example,DC=com",) if role == Role.HELPDESK else ()
        make_user(username, role, scopes=scopes)
    page.add_init_script(LISTEN)
    sign_in(username)
    nav = page.locator("nav[aria-label=Main] a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    paths = [*nav, *(extra.format(**tenant) for extra in EXTRA_PAGES[role])]
    folder = ARTIFACTS / f"accessibility_{role}"
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for index, path in enumerate(paths):
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(live_server.url + path)
            name = f"{index:02d}-{path.strip('/').replace('/', '_') or 'dashboard'}-{width}.png"
            page.screenshot(path=str(folder / name), full_page=True)
            problems = serious_violations(page, axe_source) + page.evaluate("window.__violations")
            # Wide tables scroll inside their card; the page itself never scrolls sideways.
            if (scroll_width := page.evaluate("document.documentElement.scrollWidth")) > width:
                problems.append(f"the page scrolls sideways ({scroll_width} px wide)")
            if problems:
                found[f"{path} at {width} px"] = problems
    assert found == {}


def test_on_a_phone_the_navigation_opens_from_its_menu_button(live_server, page, screenshot, make_user, sign_in):
    make_user("root", Role.ADMIN)
    sign_in("root")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live_server.url + "/mailboxes/")
    menu = page.get_by_role("button", name="Menu")
    nav = page.locator("nav[aria-label=Main]")
    assert menu.get_attribute("aria-expanded") == "false" and not nav.is_visible()
    assert page.get_by_role("heading", name="Mailboxes").bounding_box()["y"] < 150  # the page starts at once
    screenshot("phone-menu-closed")
    menu.click()
    assert menu.get_attribute("aria-expanded") == "true" and nav.is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
    screenshot("phone-menu-open")
    nav.get_by_role("link", name="Audit log").focus()
    page.keyboard.press("Escape")  # closes the menu and gives the focus back to its button
    assert menu.get_attribute("aria-expanded") == "false" and not nav.is_visible()
    assert page.evaluate("document.activeElement.classList.contains('nav-toggle')")

    page.set_viewport_size({"width": 1280, "height": 800})
    menu.wait_for(state="hidden")  # the script hears of the wider screen after the resize
    assert nav.is_visible()


def test_the_skip_link_leads_to_the_content_and_a_live_search_is_announced(
    live_server, page, screenshot, make_user, sign_in, tenant
):
    make_user("audrey", Role.AUDITOR)
    sign_in("audrey")
    page.goto(live_server.url + "/mailboxes/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the content")
    assert page.evaluate("document.activeElement.className") == "skip-link" and skip.is_visible()
    screenshot("skip-link-focused")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"

    # The count is a live region (role=status) that stays in the page while each search fills it in place, so a
    # screen reader announces the new count; the results it counts are swapped in below it.
    count = page.get_by_role("status").filter(has_text="mailboxes")
    assert count.inner_text() == "3 mailboxes"
    count.evaluate("node => node.setAttribute('data-original', 'yes')")
    page.fill("#id_q", "team-abe")
    page.locator("[data-original]").get_by_text("1 mailbox", exact=True).wait_for()
    assert page.get_by_role("link", name="Abe Adams").is_visible() and page.get_by_role("status").count() == 1
