"""Contract of the emulator's Graph organization and of the app's Entra role at Exchange's admin API.

Sources: Learn "organization resource type" and "List organization" (v1.0): ``GET /organization`` answers a
collection holding the tenant's organization; ``onPremisesSyncEnabled`` is true while the tenant is synced from
on-premises, ``onPremisesLastSyncDateTime`` the last sync time (ISO 8601, UTC); the application permission is
Organization.Read.All (least privileged), else 403 Authorization_RequestDenied. App-only Exchange needs
Exchange.ManageAsApp plus a role, and a missing role is 401/403 (exchange-facts §4.1, §4.4); IsExchangeCloudManaged
needs Exchange Administrator (Hybrid Identity or Global Administrator also named) since GA (§1.5). How narrower roles
fare is UNCONFIRMED and in the emulator's GUESSES.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sandbox.exchange_online import GUESSES


@pytest.fixture(scope="module")
def graph_token(exchange_online) -> str:
    result = exchange_online.msal_app("secret").acquire_token_for_client([exchange_online.graph_scope])
    assert "access_token" in result, result
    return result["access_token"]


def organization(exchange_online, token, **params):
    with exchange_online.session() as session:
        return session.get(f"{exchange_online.graph_url}/v1.0/organization", params=params or None,
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip


def test_organization_lists_the_tenant_with_its_last_sync_time(exo_clean, graph_token):
    """A sync tick is an Entra Connect cycle: the organization's onPremisesLastSyncDateTime follows it."""
    exo_clean.sync()
    response = organization(
        exo_clean, graph_token, **{"$select": "id,onPremisesSyncEnabled,onPremisesLastSyncDateTime"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["@odata.context"].endswith("/v1.0/$metadata#organization(id,onPremisesSyncEnabled,"
                                           "onPremisesLastSyncDateTime)")  # fmt: skip
    (org,) = body["value"]
    assert org["id"] == exo_clean.tenant_id and org["onPremisesSyncEnabled"] is True
    last = dt.datetime.fromisoformat(org["onPremisesLastSyncDateTime"].replace("Z", "+00:00"))
    assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - last < dt.timedelta(minutes=1)
    assert set(org) == {"id", "onPremisesSyncEnabled", "onPremisesLastSyncDateTime"}


def test_a_test_sets_the_last_sync_time_and_the_next_cycle_moves_it_on(exo_clean, graph_token):
    exo_clean.set_organization(onPremisesLastSyncDateTime="2026-01-02T03:04:05Z")
    (org,) = organization(exo_clean, graph_token).json()["value"]
    assert org["onPremisesLastSyncDateTime"] == "2026-01-02T03:04:05Z"
    exo_clean.sync()
    (org,) = organization(exo_clean, graph_token).json()["value"]
    assert org["onPremisesLastSyncDateTime"] > "2026-01-02T03:04:05Z"


def test_organization_needs_organization_read_all_and_rejects_unknown_select(exo_clean, graph_token):
    no_permission = exo_clean.msal_app("no_permission").acquire_token_for_client([exo_clean.graph_scope])
    response = organization(exo_clean, no_permission["access_token"])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    users_only = exo_clean.mint_token(audience="https://graph.microsoft.com", roles=["User.Read.All"])
    assert organization(exo_clean, users_only).status_code == 403
    response = organization(exo_clean, graph_token, **{"$select": "nosuchthing"})
    assert response.status_code == 400 and "microsoft.graph.organization" in response.json()["error"]["message"]


def test_without_exchange_administrator_the_flag_is_refused_but_other_writes_are_not(exo_clean, exo_invoke):
    synced = next(m for m in exo_clean.mailboxes() if m.get("IsDirSynced"))
    identity = synced["ExternalDirectoryObjectId"]
    exo_clean.set_settings(app_directory_roles=["Exchange Recipient Administrator"])
    response = exo_invoke("Set-Mailbox", {"Identity": identity, "IsExchangeCloudManaged": False})
    assert response.status_code == 403
    assert "IsExchangeCloudManaged" in response.json()["error"]["details"][0]["message"]
    assert exo_invoke("Get-Mailbox", {"Identity": identity}).status_code == 200

    exo_clean.set_settings(app_directory_roles=[])
    assert exo_invoke("Get-Mailbox", {"Identity": identity}).status_code == 403

    exo_clean.set_settings(app_directory_roles=["Exchange Administrator"])
    response = exo_invoke("Set-Mailbox", {"Identity": identity, "IsExchangeCloudManaged": False})
    assert response.status_code == 200, response.text


def test_the_role_and_organization_guesses_are_listed():
    assert any("app_directory_roles" in guess for guess in GUESSES)
    assert any("onPremisesLastSyncDateTime is the end of the last sync tick" in guess for guess in GUESSES)
