"""Contract of the emulator's tenant default (exchange-facts §1.9): Set-OrganizationConfig stores it,
Get-OrganizationConfig shows it, and a user synced while it is on arrives without Exchange attributes and, once
licensed, gets a mailbox Exchange Online masters."""

from __future__ import annotations

import pytest

from tests.sandbox import test_exchange_online_graph as graph_tests
from tests.sandbox import test_exchange_online_sync as sync_tests

ldap = sync_tests.ldap
ad_user = sync_tests.ad_user
graph_token = graph_tests.graph_token
graph = graph_tests.graph
ON = "ExchangeAttributesCloudManagedByDefault"
OFF = "ExchangeAttributesServerManagedByDefault"
READ_BACK = "BlockExchangeProvisioningFromOnPremEnabled"


def organization(exo_invoke) -> dict:
    response = exo_invoke("Get-OrganizationConfig")
    assert response.status_code == 200, response.text
    return response.json()["value"][0]


def entra_user(graph, upn: str) -> dict:
    users = graph_tests.all_users(graph, **{"$select": "id,userPrincipalName,mail,mailNickname,proxyAddresses"})
    return next(user for user in users if user["userPrincipalName"] == upn)


def test_set_organization_config_switches_the_default_and_get_shows_it(exo_clean, exo_invoke):
    """exchange-facts §1.4 [MS S5]: -ExchangeAttributesCloudManagedByDefault and -ExchangeAttributesServerManaged
    ByDefault are SwitchParameters of Set-OrganizationConfig; the read-back property (BlockExchangeProvisioningFromOn
    PremEnabled) is third-party only [3P S27], a guess listed in GUESSES."""
    assert organization(exo_invoke)[READ_BACK] is False
    response = exo_invoke("Set-OrganizationConfig", {ON: True})
    assert response.status_code == 200, response.text
    assert response.json()["value"] == []
    assert organization(exo_invoke)[READ_BACK] is True
    again = exo_invoke("Set-OrganizationConfig", {ON: True})  # already on: Exchange's "no settings modified" warning
    assert "no settings of" in again.json()["@adminapi.warnings"][0]
    assert exo_invoke("Set-OrganizationConfig", {ON: True, OFF: True}).status_code == 400
    assert exo_clean.counters()["carried_out"]["Set-OrganizationConfig"] == 2  # the two that ran, not the 400
    assert exo_invoke("Set-OrganizationConfig", {OFF: True}).status_code == 200
    assert organization(exo_invoke)[READ_BACK] is False


def test_a_user_synced_while_the_default_is_on_arrives_without_exchange_attributes(
    exo_clean, exo_invoke, ad_user, graph
):
    """exchange-facts §1.9 [MS S1; 3P S21]: with the default on, new directory-synced users arrive in Entra without
    Exchange attributes, and a mailbox created in AD does not reach Exchange Online; once licensed, the mailbox is
    created already cloud-managed. Users synced before keep syncing as they did."""
    before = ad_user("td.before")
    exo_clean.sync()
    assert exo_invoke("Set-OrganizationConfig", {ON: True}).status_code == 200
    newcomer = ad_user("td.newcomer", extensionAttribute2="from AD")
    stats = exo_clean.sync()
    assert stats["arrived_without_exchange"] == 1 and stats["created"] == 0
    assert exo_clean.get_mailbox(newcomer["upn"]) is None
    user = entra_user(graph, newcomer["upn"])
    assert user["mail"] is None and user["mailNickname"] is None and user["proxyAddresses"] == []
    assert exo_invoke("Get-Mailbox", {"Identity": newcomer["upn"]}).status_code == 404

    licensed = exo_clean.license_user(newcomer["upn"])
    assert licensed["IsDirSynced"] is True and licensed["IsExchangeCloudManaged"] is True
    exo_clean.sync()  # the next tick joins it but writes none of AD's Exchange attributes into it
    shown = exo_invoke("Get-Mailbox", {"Identity": newcomer["upn"]}).json()["value"][0]
    assert shown["IsExchangeCloudManaged"] is True and shown["IsDirSynced"] is True
    assert shown["CustomAttribute2"] == "" and shown["PrimarySmtpAddress"] == newcomer["upn"]
    old = exo_clean.get_mailbox(before["upn"])
    assert old["IsExchangeCloudManaged"] is False  # synced before the switch: unchanged


def test_switching_the_default_off_leaves_the_users_it_affected(exo_clean, exo_invoke, ad_user):
    """exchange-facts §1.9 [3P S21, S27]: -ExchangeAttributesServerManagedByDefault changes the default only for
    future users; those already affected stay as they are (only Microsoft Support changes them)."""
    exo_invoke("Set-OrganizationConfig", {ON: True})
    affected = ad_user("td.affected")
    exo_clean.sync()
    exo_invoke("Set-OrganizationConfig", {OFF: True})
    later = ad_user("td.later")
    exo_clean.sync()
    assert exo_clean.get_mailbox(affected["upn"]) is None  # still without a mailbox from AD
    assert exo_clean.get_mailbox(later["upn"])["IsExchangeCloudManaged"] is False  # synced as before the default
    assert exo_clean.license_user(affected["upn"])["IsExchangeCloudManaged"] is True


def test_only_users_synced_under_the_default_can_be_licensed(exo_clean, ad_user):
    user = ad_user("td.classic")
    exo_clean.sync()
    with pytest.raises(Exception, match="404"):
        exo_clean.license_user(user["upn"])
