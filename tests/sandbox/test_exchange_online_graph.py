"""Contract of the emulator's Microsoft Graph: ``GET /v1.0/users``, the Entra users Entra Connect made from AD.

Sources: Learn "List users" (GET /users; application permission User.Read.All, least privileged; the default
property set), "Use the $select query parameter", "Paging Microsoft Graph data in your app" (/users pages 100 by
default, $top, absolute @odata.nextLink with a $skiptoken), "Microsoft Graph error responses and resource types"
(``{"error": {"code", "message", "innerError"}}``), and exchange-facts §8 (id = Exchange's
ExternalDirectoryObjectId; onPremisesImmutableId = base64 of the sourceAnchor; onPremisesDistinguishedName,
onPremisesSamAccountName, onPremisesSyncEnabled, onPremisesLastSyncDateTime).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import jwt
import ldap3
import pytest

from tests.sandbox.test_exchange_online_sync import REMOTE_USER, SAM_NORMAL_USER_ACCOUNT

PAIRING = "id,userPrincipalName,onPremisesImmutableId,onPremisesDistinguishedName"
ON_PREMISES = (
    "id,userPrincipalName,onPremisesImmutableId,onPremisesDistinguishedName,onPremisesSamAccountName,"
    "onPremisesSyncEnabled,onPremisesLastSyncDateTime,mail,displayName"
)


@pytest.fixture(scope="module")
def graph_token(exchange_online) -> str:
    result = exchange_online.msal_app("secret").acquire_token_for_client([exchange_online.graph_scope])
    assert "access_token" in result, result
    return result["access_token"]


@pytest.fixture
def graph(exchange_online, graph_token):
    session = exchange_online.session()

    def get(path_or_url: str = "/v1.0/users", *, token: str | None = graph_token, **params):
        url = path_or_url if path_or_url.startswith("https://") else exchange_online.graph_url + path_or_url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return session.get(url, params=params or None, headers=headers, timeout=30)

    yield get
    session.close()


def all_users(graph, **params) -> list[dict]:
    response = graph(**params)
    users = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        users += body["value"]
        if "@odata.nextLink" not in body:
            return users
        response = graph(body["@odata.nextLink"])


@pytest.fixture
def ldap(directory) -> Iterator[ldap3.Connection]:
    conn = ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True)
    yield conn
    conn.unbind()


@pytest.fixture
def person(directory, ldap) -> Iterator:
    """Factory: an AD person (optionally without a mailbox); deleted after the test."""
    added: list[str] = []

    def add(alias: str, *, guid: uuid.UUID | None = None, mailbox: bool = True, **attributes) -> dict:
        guid = guid or uuid.uuid4()
        dn = f"CN={alias},OU=Sales,{directory.users_dn}"
        values = {
            "objectClass": ["top", "person", "organizationalPerson", "user"], "cn": alias, "sn": alias,
            "sAMAccountType": SAM_NORMAL_USER_ACCOUNT, "objectGUID": guid.bytes_le, "sAMAccountName": alias[:20],
            "userPrincipalName": f"{alias}@corp.example.com", "displayName": alias.title(), **attributes,
        }  # fmt: skip
        if mailbox:
            values.update(mail=f"{alias}@corp.example.com", mailNickname=alias, msExchRecipientTypeDetails=REMOTE_USER)
        assert ldap.add(dn, attributes=values), ldap.result
        added.append(dn)
        return {"dn": dn, "guid": guid, "upn": values["userPrincipalName"], "sam": values["sAMAccountName"]}

    yield add
    for dn in added:
        ldap.delete(dn)


# -- tokens and permissions --------------------------------------------------------------------------------------


def test_msal_gets_a_graph_token_carrying_the_graph_permission(exchange_online, graph_token):
    """An app-only token for https://graph.microsoft.com/.default has Graph as audience and the app's Graph
    application permissions as roles (User.Read.All, the least-privileged permission for List users, and
    Organization.Read.All, the one for List organization)."""
    claims = jwt.decode(graph_token, options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["roles"] == ["User.Read.All", "Organization.Read.All"]
    assert claims["idtyp"] == "app" and claims["tid"] == exchange_online.tenant_id


def test_an_app_without_user_read_all_gets_403_authorization_request_denied(exchange_online, graph):
    """Learn "List users" needs User.Read.All (or a broader permission); without it Graph answers 403 with
    Authorization_RequestDenied "Insufficient privileges to complete the operation."."""
    result = exchange_online.msal_app("no_permission").acquire_token_for_client([exchange_online.graph_scope])
    response = graph(token=result["access_token"])
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "Authorization_RequestDenied"
    assert error["message"] == "Insufficient privileges to complete the operation."
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}
    exchange_only = exchange_online.mint_token(audience="https://graph.microsoft.com", roles=["Exchange.ManageAsApp"])
    assert graph(token=exchange_only).status_code == 403


def test_tokens_for_another_resource_or_none_get_401(exchange_online, graph, exo_token):
    """An Exchange token is not valid at Graph (audience), and no token is 401 InvalidAuthenticationToken."""
    response = graph(token=exo_token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert graph(token=None).status_code == 401
    expired = exchange_online.mint_token(audience="https://graph.microsoft.com", lifetime=-60)
    assert graph(token=expired).status_code == 401


def test_a_graph_token_is_refused_by_exchange(exchange_online, exo_invoke, graph_token):
    assert exo_invoke("Get-OrganizationConfig", token=graph_token).status_code == 401


# -- what /users lists ---------------------------------------------------------------------------------------------


def test_every_synced_person_is_listed_with_its_on_premises_properties(exo_clean, graph, person, directory):
    """exchange-facts §8: id = Exchange's ExternalDirectoryObjectId; onPremisesImmutableId = base64 of the
    sourceAnchor (objectGUID here, no mS-DS-ConsistencyGuid; the worked example of §3); people without a mailbox
    are Entra users too."""
    with_mailbox = person("graph.anna", guid=uuid.UUID("f7cc07d7-7c15-447d-876d-c01b0e5a9e38"))
    without = person("graph.nomail", mailbox=False)
    exo_clean.sync()
    users = {u["userPrincipalName"]: u for u in all_users(graph, **{"$select": ON_PREMISES})}
    anna = users[with_mailbox["upn"]]
    mailbox = exo_clean.get_mailbox(with_mailbox["upn"])
    assert anna["id"] == mailbox["ExternalDirectoryObjectId"]
    assert anna["onPremisesImmutableId"] == "1wfM9xV8fUSHbcAbDlqeOA=="
    assert anna["onPremisesDistinguishedName"].lower() == with_mailbox["dn"].lower()
    assert anna["onPremisesSamAccountName"] == with_mailbox["sam"]
    assert anna["onPremisesSyncEnabled"] is True
    assert anna["onPremisesLastSyncDateTime"].endswith("Z")
    assert anna["mail"] == "graph.anna@corp.example.com" and anna["displayName"] == "Graph.Anna"
    assert users[without["upn"]]["onPremisesSyncEnabled"] is True
    assert exo_clean.get_mailbox(without["upn"]) is None
    generated = [u for u in users.values() if u["onPremisesDistinguishedName"]]
    assert len(generated) == 20 + 2  # the session directory's people, and these two


def test_on_premises_immutable_id_follows_the_source_anchor_setting(exo_clean, graph, person):
    """exchange-facts §8: Connect >= 1.1.524 anchors on mS-DS-ConsistencyGuid, older installs on objectGUID."""
    consistency = uuid.uuid4()
    user = person("graph.consistency", **{"mS-DS-ConsistencyGuid": consistency.bytes_le})
    exo_clean.sync()

    def anchor() -> str:
        users = all_users(graph, **{"$select": PAIRING})
        return next(u["onPremisesImmutableId"] for u in users if u["userPrincipalName"] == user["upn"])

    assert anchor() == base64.b64encode(consistency.bytes_le).decode()
    exo_clean.set_settings(source_anchor="objectGUID")
    exo_clean.sync()
    assert anchor() == base64.b64encode(user["guid"].bytes_le).decode()


def test_cloud_only_mailboxes_are_users_without_an_on_premises_side(exo_clean, graph):
    mailbox = exo_clean.create_mailbox(UserPrincipalName="graph.cloud@corp.example.com")
    users = all_users(graph, **{"$select": ON_PREMISES})
    cloud = next(u for u in users if u["userPrincipalName"] == "graph.cloud@corp.example.com")
    assert cloud["id"] == mailbox["ExternalDirectoryObjectId"]
    assert cloud["onPremisesSyncEnabled"] is None and cloud["onPremisesImmutableId"] is None


# -- $select ---------------------------------------------------------------------------------------------------------


def test_select_returns_exactly_the_properties_named(exo_clean, graph):
    body = graph(**{"$select": PAIRING}).json()
    assert body["@odata.context"] == f"{exo_clean.graph_url}/v1.0/$metadata#users({PAIRING})"
    assert body["value"] and all(list(u) == PAIRING.split(",") for u in body["value"])


def test_without_select_the_default_property_set_comes_back(exo_clean, graph):
    """Learn "List users": by default businessPhones, displayName, givenName, id, jobTitle, mail, mobilePhone,
    officeLocation, preferredLanguage, surname and userPrincipalName; onPremises* only when selected."""
    body = graph().json()
    assert body["@odata.context"] == f"{exo_clean.graph_url}/v1.0/$metadata#users"
    expected = {"businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone",
                "officeLocation", "preferredLanguage", "surname", "userPrincipalName"}  # fmt: skip
    assert all(set(u) == expected for u in body["value"])
    assert all(u["businessPhones"] == [] for u in body["value"])


def test_an_unknown_property_in_select_is_a_400(graph):
    """Graph's answer to an unknown $select name (seen in microsoftgraph/msgraph-sdk-powershell#2103 and
    mguessan/davmail#488): 400 BadRequest "Parsing OData Select and Expand failed: Could not find a property
    named 'x' on type 'microsoft.graph.user'."."""
    response = graph(**{"$select": "id,immutableId"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["message"] == (
        "Parsing OData Select and Expand failed: Could not find a property named 'immutableId' on type "
        "'microsoft.graph.user'."
    )


# -- paging ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("top", ["0", "1000", "ten"])
def test_top_outside_1_to_999_is_a_400(graph, top):
    """Microsoft Q&A 1129204: "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."."""
    response = graph(**{"$top": top})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."
    )


def test_pages_of_top_follow_the_absolute_next_link_to_every_user_once(exo_clean, graph):
    """Learn "Paging Microsoft Graph data": @odata.nextLink is the absolute URL of the next page, carrying the
    query and a $skiptoken; the last page has none. Synced people come first, then cloud-only users."""
    for index in range(3):
        exo_clean.create_mailbox(UserPrincipalName=f"graph.page{index}@corp.example.com")
    first = graph(**{"$select": "id,userPrincipalName", "$top": "7"}).json()
    link = urlsplit(first["@odata.nextLink"])
    assert first["@odata.nextLink"].startswith(f"{exo_clean.graph_url}/v1.0/users?")
    assert parse_qs(link.query)["$select"] == ["id,userPrincipalName"] and parse_qs(link.query)["$top"] == ["7"]
    assert "$skiptoken" in parse_qs(link.query)
    assert len(first["value"]) == 7
    users = all_users(graph, **{"$select": "id,userPrincipalName", "$top": "7"})
    ids = [u["id"] for u in users]
    assert len(ids) == len(set(ids)) == 20 + 3
    assert [u["userPrincipalName"] for u in users[-3:]] == [f"graph.page{i}@corp.example.com" for i in range(3)]


def test_the_default_page_holds_100_users(exo_clean, graph):
    """Learn "Paging Microsoft Graph data": GET /users returns 100 results a page by default."""
    for index in range(85):
        exo_clean.create_mailbox(UserPrincipalName=f"graph.bulk{index}@corp.example.com")
    first = graph(**{"$select": "id"}).json()
    assert len(first["value"]) == 100 and "@odata.nextLink" in first
    assert len(all_users(graph, **{"$select": "id"})) == 20 + 85


def test_a_forged_skip_token_is_a_400(graph):
    assert graph(**{"$skiptoken": "not-a-token"}).status_code == 400
