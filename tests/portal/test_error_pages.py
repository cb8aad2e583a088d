"""The portal's own 403, 404 and 500 pages (portal.views.errors), the "not in your scope" answer, and Vary on
HX-Request (portal.middleware.HtmxVaryMiddleware)."""

import re

import pytest
from django.test import Client, RequestFactory

from portal.dn import normalize_dn
from portal.roles import Role
from portal.views.errors import BARE_500, server_error
from soa.models import Mailbox

SALES = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
FINANCE = "OU=Finance,OU=Corp,DC=corp,DC=example,DC=com"


def _mailbox(name: str, ou: str) -> Mailbox:
    dn = f"CN={name},{ou}"
    return Mailbox.objects.create(
        dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(ou), upn=f"{name.split()[0].lower()}@corp.example.com",
        display_name=name, search_name=name.lower(), in_ad=True, in_exo=True,
    )  # fmt: skip


def _without_tokens(html: str) -> str:
    """The page without what differs on every answer (the CSRF token)."""
    return re.sub(r'(csrfmiddlewaretoken" value=|X-CSRFToken": )"[^"]+"', "", html)


@pytest.mark.django_db
def test_a_mailbox_outside_the_scope_reads_exactly_like_a_missing_one_and_names_the_users_scope(client, make_user):
    finance = _mailbox("Finn Fisher", FINANCE)
    client.force_login(make_user("sid", Role.HELPDESK, scopes=(SALES,)))
    outside = client.get(f"/mailboxes/{finance.pk}/")
    missing = client.get(f"/mailboxes/{finance.pk + 1000}/")
    assert outside.status_code == missing.status_code == 404
    # The same words whatever lies behind the id: nothing tells that Finn's mailbox exists.
    assert _without_tokens(outside.content.decode()) == _without_tokens(missing.content.decode())
    text = outside.content.decode()
    assert '<h1 id="error-title">This mailbox is not in your scope</h1>' in text
    assert f"<li><code>{SALES}</code></li>" in text and "Finn" not in text and FINANCE not in text
    assert 'href="/mailboxes/"' in text and 'aria-label="Main"' in text  # a way back, in the portal's layout
    # The same answer from the pages inside the mailbox page (its writeback card).
    assert client.get(f"/mailboxes/{finance.pk}/writeback/").status_code == 404


@pytest.mark.django_db
def test_for_a_tenant_wide_user_a_missing_mailbox_is_simply_missing(client, make_user):
    client.force_login(make_user("audrey", Role.AUDITOR))
    text = client.get("/mailboxes/999999/").content.decode()
    assert '<h1 id="error-title">No such mailbox</h1>' in text and "not in your scope" not in text


@pytest.mark.django_db
def test_a_refused_page_says_which_right_is_missing(client, make_user):
    client.force_login(make_user("hugo", Role.HELPDESK))
    refused = client.get("/roles/")
    assert refused.status_code == 403
    text = refused.content.decode()
    assert "Your roles do not allow portal configure." in text and 'aria-label="Main"' in text
    assert 'href="/"' in text and "portal.css" in text


@pytest.mark.django_db
def test_an_unknown_address_is_the_portals_404_page(client, make_user):
    client.force_login(make_user("hugo", Role.HELPDESK))
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert '<h1 id="error-title">Not found</h1>' in response.content.decode()


@pytest.mark.django_db
def test_the_500_page_is_in_the_portals_layout_and_needs_neither_the_request_nor_the_database(
    client, make_user, settings, django_assert_num_queries
):
    settings.ROOT_URLCONF = "tests.portal.error_urls"
    client.force_login(make_user("hugo", Role.HELPDESK))
    client.raise_request_exception = False
    response = client.get("/fails/", headers={"X-Request-ID": "req-4711"})
    assert response.status_code == 500
    text = response.content.decode()
    assert '<h1 id="error-title">Something went wrong</h1>' in text and "portal.css" in text
    assert "<code>req-4711</code>" in text and 'href="/"' in text
    assert 'aria-label="Main"' not in text and "hugo" not in text  # no context processor ran
    with django_assert_num_queries(0):
        assert server_error(RequestFactory().get("/")).status_code == 500


def test_the_500_page_falls_back_to_a_bare_page_when_its_template_cannot_render(settings):
    # Debug off serves static files from collectstatic's manifest; without it every {% static %} fails, and the
    # 500 page must still answer.
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage."
                                                                         "ManifestStaticFilesStorage"}}  # fmt: skip
    settings.STATIC_ROOT = "/nonexistent-static-root"
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500 and response.content.decode() == BARE_500


@pytest.mark.django_db
def test_a_forged_form_gets_the_portals_csrf_page(make_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("root", Role.ADMIN))
    response = client.post("/roles/assign/", {"reason": "x"})
    assert response.status_code == 403
    assert '<h1 id="error-title">This form has expired</h1>' in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["/login/", "/", "/mailboxes/", "/audit/", "/mailboxes/999999/", "/roles/", "/no/such/page/", "/logout/"]
)
def test_every_answer_varies_with_the_htmx_header(client, make_user, url):
    """A fragment answered to htmx must never be reused for a plain request (Back showed a bare fragment)."""
    client.force_login(make_user("audrey", Role.AUDITOR))
    response = client.get(url)
    assert "HX-Request" in [part.strip() for part in response["Vary"].split(",")], url
