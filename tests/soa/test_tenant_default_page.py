"""The tenant default page (soa.views_tenant_default): the value Exchange Online shows (read through the client from
the emulator, cached, with when it was read, or an error when Exchange cannot be reached), the blockers with their
evidence, and the forms each role gets; the typed confirmation sent through the page."""

import pytest
from django.core.cache import cache

from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import TenantDefaultState
from soa.models import TenantDefaultApproval, TenantDefaultRequest
from tests.exchange_fixtures import portal_points_at
from tests.soa.test_wave_support import make_mailbox

pytestmark = pytest.mark.django_db

PAGE = "/mailboxes/readiness/tenant-default/"


@pytest.fixture
def tenant(directory, exo_clean):
    cache.clear()
    with portal_points_at(directory, exo_clean):
        yield exo_clean
    cache.clear()


def page(client, user, **params):
    client.force_login(user)
    response = client.get(PAGE, params)
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_what_exchange_shows_and_when_it_was_read(tenant, client, make_user, exo_invoke):
    admin = make_user("page-admin", Role.ADMIN)
    html = page(client, admin)
    assert 'data-testid="td-value" data-enabled="no"' in html
    assert "BlockExchangeProvisioningFromOnPremEnabled" in html and f"tenant {tenant.tenant_domain}" in html
    assert "only Microsoft Support can change them back" in html
    assert 'data-testid="td-request-form"' in html
    exo_invoke("Set-OrganizationConfig", {"ExchangeAttributesCloudManagedByDefault": True})
    assert 'data-enabled="no"' in page(client, admin)  # the cached read, within TENANT_DEFAULT_CACHE_SECONDS
    html = page(client, admin, refresh="1")
    assert 'data-enabled="yes"' in html and 'data-testid="td-request-form"' not in html
    assert "nothing to request" in html


def test_an_unreachable_exchange_is_shown_as_an_error(tenant, client, make_user, settings):
    settings.EXO_BASE_URL = "https://127.0.0.1:9"  # nothing listens there
    admin = make_user("page-admin", Role.ADMIN)
    html = page(client, admin)
    assert 'data-testid="td-read-error"' in html and "could not be read" in html
    assert client.post(f"{PAGE}request/", {"reason": "now"}).status_code == 200  # refused: the tenant is unknown
    assert not TenantDefaultRequest.objects.exists()
    settings.EXO_TENANT = ""
    assert "Exchange Online is not configured" in page(client, admin, refresh="1")


def test_the_readiness_page_loads_the_value_as_a_card(tenant, client, make_user):
    client.force_login(make_user("page-approver", Role.APPROVER))
    readiness = client.get("/mailboxes/readiness/").content.decode()
    assert 'hx-get="/mailboxes/readiness/tenant-default/"' in readiness
    card = client.get(PAGE, HTTP_HX_REQUEST="true").content.decode()
    assert card.strip().startswith('<section class="card tenant-default" id="tenant-default-state"') and "Off" in card


def test_blockers_link_to_their_evidence(tenant, client, make_user):
    make_mailbox("Evidence In AD")
    html = page(client, make_user("page-operator", Role.WAVE_OPERATOR))
    assert 'data-testid="td-blocker-ad_managed" data-holds="yes"' in html
    assert 'href="/mailboxes/?authority=ON_PREM"' in html and 'href="/drift/"' in html
    assert 'data-testid="td-request-form"' not in html  # an operator does not ask


def test_approvers_confirm_by_typing_the_tenant_name_through_the_page(tenant, client, make_user):
    admin = make_user("page-admin", Role.ADMIN)
    client.force_login(admin)
    response = client.post(f"{PAGE}request/", {"reason": "every mailbox has moved"})
    assert response.status_code == 302
    request = TenantDefaultRequest.objects.get()
    assert request.tenant_name == tenant.tenant_domain and request.state == TenantDefaultState.PENDING
    assert 'data-testid="td-approve-form"' not in page(client, admin)  # the requester is not offered it
    approver = make_user("page-approver", Role.APPROVER)
    assert 'data-testid="td-approve-form"' in page(client, approver)
    before = AuditEvent.objects.count()
    wrong = client.post(f"{PAGE}{request.pk}/approve/", {"typed_name": "contoso.onmicrosoft.com"})
    assert wrong.status_code == 200 and "does not match the tenant&#x27;s name" in wrong.content.decode()
    assert AuditEvent.objects.count() == before and not TenantDefaultApproval.objects.exists()
    right = client.post(f"{PAGE}{request.pk}/approve/", {"typed_name": tenant.tenant_domain})
    assert right.status_code == 302 and TenantDefaultApproval.objects.filter(approver=approver).exists()
    again = client.post(f"{PAGE}{request.pk}/approve/", {"typed_name": tenant.tenant_domain}, follow=True)
    assert "already approved" in again.content.decode() and TenantDefaultApproval.objects.count() == 1


def test_auditors_read_the_page_and_cannot_send_anything(tenant, client, make_user):
    admin = make_user("page-admin", Role.ADMIN)
    client.force_login(admin)
    client.post(f"{PAGE}request/", {"reason": "ready"})
    request = TenantDefaultRequest.objects.get()
    auditor = make_user("page-auditor", Role.AUDITOR)
    html = page(client, auditor)
    assert "td-approve-form" not in html and "td-request-form" not in html and "Request #" in html
    refused = client.post(f"{PAGE}{request.pk}/approve/", {"typed_name": tenant.tenant_domain})
    assert refused.status_code == 403 and not TenantDefaultApproval.objects.exists()
    client.force_login(make_user("page-helpdesk", Role.HELPDESK))
    assert client.get(PAGE).status_code == 403
