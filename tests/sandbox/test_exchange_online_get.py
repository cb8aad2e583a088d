"""Contract of the emulator's read side of InvokeCommand: envelope, identities, filters, paging, errors.

Expected shapes come from exchange-facts §4.2-§4.4, not from what any client sends.
"""

from __future__ import annotations

import json

import pytest

UPN = "jonas.nowak@corp.example.com"  # generated user 12: many proxy types (smtp, SIP, X500)
MORE_RESULTS = "There are more results available than are currently displayed."


def values(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["value"]


def assert_exchange_error(response, status: int, code: str, exception_suffix: str) -> str:
    """The documented error body; returns the human text of details[0]."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert "innererror" in error
    ex_code, exception_type, text = error["details"][0]["message"].split("|", 2)
    assert exception_type.endswith(exception_suffix)
    return text


@pytest.fixture
def jonas(exo_clean):
    return exo_clean.get_mailbox(UPN)


def test_success_envelope_is_the_documented_one(exo_clean, exo_invoke):
    response = exo_invoke("Get-Mailbox", {"Identity": UPN})
    assert response.headers["Content-Type"].startswith("application/json;odata.metadata=minimal")
    body = response.json()
    assert body["@odata.context"] == (
        f"{exo_clean.base_url}/adminapi/beta/{exo_clean.tenant_id}/$metadata#Collection(Exchange.GenericHashTable)"
    )
    assert body["adminapi.warnings@odata.type"] == "#Collection(String)"
    assert body["@adminapi.warnings"] == []
    assert "@odata.nextLink" not in body
    mailbox = body["value"][0]
    assert mailbox["EmailAddresses@odata.type"] == "#Collection(String)"
    assert mailbox["ExtensionCustomAttribute1@odata.type"] == "#Collection(String)"
    assert mailbox["Guid@odata.type"] == "#Guid"
    assert mailbox["IsDirSynced"] is True
    assert mailbox["IsExchangeCloudManaged"] is False
    assert mailbox["RecipientTypeDetails"] == "UserMailbox"


def test_tenant_may_be_given_as_its_initial_domain(exo_clean, exo_invoke):
    url = f"{exo_clean.base_url}/adminapi/beta/{exo_clean.tenant_domain}/InvokeCommand"
    assert values(exo_invoke("Get-Mailbox", {"Identity": UPN}, url=url))[0]["UserPrincipalName"] == UPN


def test_unknown_tenant_in_the_url_is_refused(exo_clean, exo_invoke):
    url = f"{exo_clean.base_url}/adminapi/beta/fabrikam.onmicrosoft.com/InvokeCommand"
    assert exo_invoke("Get-Mailbox", {"Identity": UPN}, url=url).status_code == 400


@pytest.mark.parametrize(
    "form",
    ["upn", "alias", "name", "guid", "braced-guid", "exchange-guid", "external-directory-object-id", "primary",
     "primary-upper-case", "primary-with-prefix", "secondary", "secondary-with-prefix", "secondary-prefix-upper",
     "sip", "x500"],
)  # fmt: skip
def test_get_mailbox_finds_a_mailbox_by_every_identity_form(jonas, exo_invoke, form):
    proxies = jonas["EmailAddresses"]
    secondary = next(p for p in proxies if p.startswith("smtp:") and p.endswith("@corp.example.com"))
    identity = {
        "upn": jonas["UserPrincipalName"],
        "alias": jonas["Alias"],
        "name": jonas["Name"],
        "guid": jonas["Guid"],
        "braced-guid": "{" + jonas["Guid"].upper() + "}",
        "exchange-guid": jonas["ExchangeGuid"],
        "external-directory-object-id": jonas["ExternalDirectoryObjectId"],
        "primary": jonas["PrimarySmtpAddress"],
        "primary-upper-case": jonas["PrimarySmtpAddress"].upper(),
        "primary-with-prefix": f"SMTP:{jonas['PrimarySmtpAddress']}",
        "secondary": secondary[5:],
        "secondary-with-prefix": secondary,
        "secondary-prefix-upper": "SMTP:" + secondary[5:],
        "sip": next(p for p in proxies if p.startswith("SIP:")),
        "x500": next(p for p in proxies if p.startswith("X500:")),
    }[form]
    found = values(exo_invoke("Get-Mailbox", {"Identity": identity}))
    assert [m["Guid"] for m in found] == [jonas["Guid"]]


def test_unknown_identity_is_a_404_with_the_documented_body(exo_clean, exo_invoke):
    response = exo_invoke("Get-Mailbox", {"Identity": "nobody@corp.example.com"})
    text = assert_exchange_error(response, 404, "NotFound", "ManagementObjectNotFoundException")
    assert "couldn't be found" in text
    assert response.json()["error"]["details"][0]["message"].startswith("Ex6F9304|")


def test_parameter_names_are_case_insensitive_and_annotations_ignored(exo_clean, exo_invoke):
    found = values(exo_invoke("Get-Mailbox", {"identity": UPN, "Identity@odata.type": "#String"}))
    assert found[0]["UserPrincipalName"] == UPN


def test_unknown_parameter_is_a_400_binding_error(exo_clean, exo_invoke):
    text = assert_exchange_error(
        exo_invoke("Get-Mailbox", {"Identity": UPN, "Frobnicate": True}), 400, "BadRequest", "ParameterBindingException"
    )
    assert "Frobnicate" in text


@pytest.mark.parametrize(
    "body",
    [
        {"CmdletName": "Get-Mailbox", "Parameters": {}},
        {"CmdletInput": {"CmdletName": "Get-Mailbox"}, "Extra": 1},
        {"CmdletInput": {"Cmdlet": "Get-Mailbox", "Parameters": {}}},
        {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": ["Identity", UPN]}},
    ],
)
def test_body_must_be_exactly_cmdlet_input(exo_clean, exo_invoke, body):
    assert exo_invoke("", body=body).status_code == 400


def test_unknown_cmdlet_is_a_403_with_nul_bytes_labelled_gzip(exo_clean, exo_invoke):
    response = exo_invoke("Remove-Mailbox", {"Identity": UPN}, stream=True)
    assert response.status_code == 403
    assert response.headers["Content-Encoding"] == "gzip"
    raw = response.raw.read(decode_content=False)
    assert raw and set(raw) == {0}


def test_unknown_cmdlet_can_answer_a_readable_403(exo_clean, exo_invoke):
    exo_clean.set_settings(unknown_cmdlet_body="json")
    response = exo_invoke("Remove-Mailbox", {"Identity": UPN})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"


# -- filters ------------------------------------------------------------------------------------------


def unlimited(exo_invoke, **params) -> list[dict]:
    return values(exo_invoke("Get-Mailbox", {"ResultSize": "Unlimited", **params}))


@pytest.mark.parametrize("operand", ["$true", "'True'", "True", "'true'"])
def test_filter_is_dir_synced(exo_clean, exo_invoke, operand):
    cloud = exo_clean.create_mailbox(UserPrincipalName="cloud.only@corp.example.com")
    synced = {m["Guid"] for m in exo_clean.mailboxes() if m["IsDirSynced"]}
    found = unlimited(exo_invoke, Filter=f"IsDirSynced -eq {operand}")
    assert {m["Guid"] for m in found} == synced
    others = unlimited(exo_invoke, Filter="IsDirSynced -eq $false")
    assert [m["Guid"] for m in others] == [cloud["Guid"]]


def test_filter_is_exchange_cloud_managed(exo_clean, exo_invoke):
    assert values(exo_invoke("Set-Mailbox", {"Identity": UPN, "IsExchangeCloudManaged": True})) == []
    found = unlimited(exo_invoke, Filter="IsDirSynced -eq $true -and IsExchangeCloudManaged -eq $true")
    assert [m["UserPrincipalName"] for m in found] == [UPN]
    rest = unlimited(exo_invoke, Filter="IsExchangeCloudManaged -eq 'False'")
    assert UPN not in {m["UserPrincipalName"] for m in rest} and rest


def test_filter_on_is_exchange_cloud_managed_can_be_switched_off(exo_clean, exo_invoke):
    # exchange-facts §1.4: whether EXO filters on it server-side is UNCONFIRMED.
    exo_clean.set_settings(filter_cloud_managed=False)
    response = exo_invoke("Get-Mailbox", {"Filter": "IsExchangeCloudManaged -eq $true"})
    text = assert_exchange_error(response, 400, "BadRequest", "ParameterBindingException")
    assert "IsExchangeCloudManaged" in text


def test_filter_when_changed_utc_greater_than(exo_clean, exo_invoke):
    exo_clean.update_mailbox(UPN, WhenChangedUTC="2031-05-01T10:00:00Z")
    for text in ("WhenChangedUTC -gt '2031-01-01T00:00:00Z'", "WhenChangedUTC -gt '1/1/2031 12:00:00 AM'"):
        found = unlimited(exo_invoke, Filter=text)
        assert [m["UserPrincipalName"] for m in found] == [UPN]
        assert found[0]["WhenChangedUTC"] == "2031-05-01T10:00:00Z"
    assert unlimited(exo_invoke, Filter="WhenChangedUTC -gt '2031-05-01T10:00:00Z'") == []
    combined = "(IsDirSynced -eq $true) -and (WhenChangedUTC -gt '2031-01-01T00:00:00Z')"
    assert [m["UserPrincipalName"] for m in unlimited(exo_invoke, Filter=combined)] == [UPN]


def test_filter_on_proxy_addresses_and_custom_attributes(exo_clean, exo_invoke):
    found = unlimited(exo_invoke, Filter="EmailAddresses -eq 'smtp:jonas_nowak@corp.example.com'")
    assert [m["UserPrincipalName"] for m in found] == [UPN]
    bare = unlimited(exo_invoke, Filter="EmailAddresses -eq 'jonas_nowak@corp.example.com'")
    assert [m["UserPrincipalName"] for m in bare] == [UPN]
    contractors = unlimited(exo_invoke, Filter="CustomAttribute2 -eq 'Contractor'")
    assert contractors and all(m["CustomAttribute2"] == "Contractor" for m in contractors)


@pytest.mark.parametrize(
    "text",
    ["IsDirSynced -eq", "IsDirSynced -equals $true", "(IsDirSynced -eq $true", "IsDirSynced -eq $true -and", ""],
)
def test_invalid_filter_syntax_is_a_400(exo_clean, exo_invoke, text):
    response = exo_invoke("Get-Mailbox", {"Filter": text})
    assert "Filter" in assert_exchange_error(response, 400, "BadRequest", "ParameterBindingException")


def test_unknown_filter_property_is_a_400(exo_clean, exo_invoke):
    response = exo_invoke("Get-Mailbox", {"Filter": "ShoeSize -eq 42"})
    assert "ShoeSize" in assert_exchange_error(response, 400, "BadRequest", "ParameterBindingException")


# -- result size and paging ---------------------------------------------------------------------------


def test_result_size_limits_and_warns(exo_clean, exo_invoke):
    response = exo_invoke("Get-Mailbox", {"ResultSize": 5})
    assert len(values(response)) == 5
    assert response.json()["@adminapi.warnings"][0].startswith(MORE_RESULTS)
    assert "@odata.nextLink" not in response.json()


def test_result_size_unlimited_returns_everything(exo_clean, exo_invoke):
    assert len(unlimited(exo_invoke)) == len(exo_clean.mailboxes())


def test_without_result_size_the_default_applies(exo_clean, exo_invoke):
    exo_clean.set_settings(default_result_size=3)
    response = exo_invoke("Get-Mailbox")
    assert len(values(response)) == 3
    assert response.json()["@adminapi.warnings"][0].startswith(MORE_RESULTS)


@pytest.mark.parametrize("size", [0, -1, "lots", True])
def test_invalid_result_size_is_a_400(exo_clean, exo_invoke, size):
    assert exo_invoke("Get-Mailbox", {"ResultSize": size}).status_code == 400


def follow(exo_clean, exo_invoke, parameters: dict, page_size: int) -> list[list[dict]]:
    """POST the same body to every @odata.nextLink until there is none."""
    pages, url = [], None
    while True:
        response = exo_invoke("Get-Mailbox", parameters, url=url, headers={"Prefer": f"odata.maxpagesize={page_size}"})
        pages.append(values(response))
        assert response.headers["Preference-Applied"] == f"odata.maxpagesize={page_size}"
        url = response.json().get("@odata.nextLink")
        if url is None:
            return pages
        assert url.startswith(exo_clean.base_url + "/adminapi/beta/")
        assert len(pages) < 100


def test_paging_follows_next_link_with_the_same_body(exo_clean, exo_invoke):
    total = len(exo_clean.mailboxes())
    pages = follow(exo_clean, exo_invoke, {"ResultSize": "Unlimited"}, 7)
    assert [len(p) for p in pages] == [7] * (total // 7) + ([total % 7] if total % 7 else [])
    guids = [m["Guid"] for page in pages for m in page]
    assert len(guids) == len(set(guids)) == total


def test_paging_honours_result_size_across_pages(exo_clean, exo_invoke):
    pages = follow(exo_clean, exo_invoke, {"ResultSize": 10}, 4)
    assert [len(p) for p in pages] == [4, 4, 2]


def test_paging_with_a_filter_keeps_the_filter(exo_clean, exo_invoke):
    cloud = {exo_clean.create_mailbox(UserPrincipalName=f"c{n}@corp.example.com")["Guid"] for n in range(5)}
    pages = follow(exo_clean, exo_invoke, {"ResultSize": "Unlimited", "Filter": "IsDirSynced -eq $false"}, 2)
    assert {m["Guid"] for page in pages for m in page} == cloud


def test_paging_does_not_repeat_items_when_mailboxes_are_added_meanwhile(exo_clean, exo_invoke):
    first = exo_invoke("Get-Mailbox", {"ResultSize": "Unlimited"}, headers={"Prefer": "odata.maxpagesize=5"})
    seen = [m["Guid"] for m in values(first)]
    exo_clean.create_mailbox(UserPrincipalName="late.arrival@corp.example.com")
    url = first.json()["@odata.nextLink"]
    while url:
        response = exo_invoke(
            "Get-Mailbox", {"ResultSize": "Unlimited"}, url=url, headers={"Prefer": "odata.maxpagesize=5"}
        )
        seen += [m["Guid"] for m in values(response)]
        url = response.json().get("@odata.nextLink")
    assert len(seen) == len(set(seen)) == len(exo_clean.mailboxes())


def test_paging_skips_mailboxes_deleted_meanwhile(exo_clean, exo_invoke):
    first = exo_invoke("Get-Mailbox", {"ResultSize": "Unlimited"}, headers={"Prefer": "odata.maxpagesize=5"})
    seen = [m["Guid"] for m in values(first)]
    later = [m for m in exo_clean.mailboxes() if m["Guid"] not in seen]
    exo_clean.delete_mailbox(later[0]["Guid"])
    url = first.json()["@odata.nextLink"]
    while url:
        response = exo_invoke(
            "Get-Mailbox", {"ResultSize": "Unlimited"}, url=url, headers={"Prefer": "odata.maxpagesize=5"}
        )
        seen += [m["Guid"] for m in values(response)]
        url = response.json().get("@odata.nextLink")
    assert later[0]["Guid"] not in seen
    assert sorted(seen) == sorted(m["Guid"] for m in exo_clean.mailboxes())


def test_next_link_refuses_a_different_body(exo_clean, exo_invoke):
    first = exo_invoke("Get-Mailbox", {"ResultSize": "Unlimited"}, headers={"Prefer": "odata.maxpagesize=3"})
    url = first.json()["@odata.nextLink"]
    other = exo_invoke("Get-Mailbox", {"ResultSize": 50}, url=url, headers={"Prefer": "odata.maxpagesize=3"})
    assert other.status_code == 400


def test_select_trims_properties(exo_clean, exo_invoke):
    url = f"{exo_clean.exchange_url}?$select=UserPrincipalName,EmailAddresses"
    mailbox = values(exo_invoke("Get-Mailbox", {"Identity": UPN}, url=url))[0]
    assert set(mailbox) == {"UserPrincipalName", "EmailAddresses", "EmailAddresses@odata.type"}


# -- tenant configuration -----------------------------------------------------------------------------


def test_get_accepted_domain_lists_the_tenant_domains(exo_clean, exo_invoke):
    domains = values(exo_invoke("Get-AcceptedDomain"))
    by_name = {d["DomainName"]: d for d in domains}
    assert by_name["corp.example.com"]["Default"] is True
    assert by_name[exo_clean.tenant_domain]["InitialDomain"] is True
    assert all(d["DomainType"] == "Authoritative" for d in domains)
    one = values(exo_invoke("Get-AcceptedDomain", {"Identity": "corp.example.com"}))
    assert [d["DomainName"] for d in one] == ["corp.example.com"]
    assert exo_invoke("Get-AcceptedDomain", {"Identity": "fabrikam.com"}).status_code == 404


def test_get_organization_config_returns_the_organisation(exo_clean, exo_invoke):
    [organization] = values(exo_invoke("Get-OrganizationConfig"))
    assert organization["Name"] == exo_clean.tenant_domain
    assert json.dumps(organization)


# -- payload weight (issue 15 point 13) ------------------------------------------------------------------------------


def test_a_mailbox_carries_the_200_plus_properties_real_get_mailbox_returns(exo_clean, exo_invoke):
    """exchange-facts §7.4: Get-Mailbox has no server-side property selection and each object carries 200+
    properties. Names from Exchange's Mailbox object (Learn "Mailbox properties") and the Get-Mailbox/Set-Mailbox
    docs; quotas in Exchange's ByteQuantifiedSize text; collections, GUIDs and dates annotated (§4.3)."""
    mailbox = values(exo_invoke("Get-Mailbox", {"Identity": UPN}))[0]
    properties = [key for key in mailbox if "@" not in key]
    assert len(properties) >= 200
    assert len(json.dumps(mailbox, separators=(",", ":")).encode()) > 10_000
    assert mailbox["ProhibitSendReceiveQuota"] == "100 GB (107,374,182,400 bytes)"
    assert mailbox["RetainDeletedItemsFor"] == "14.00:00:00"
    assert mailbox["AuditOwner@odata.type"] == "#Collection(String)" and "MailItemsAccessed" in mailbox["AuditOwner"]
    assert mailbox["ArchiveGuid@odata.type"] == "#Guid"
    assert mailbox["LegacyExchangeDN"].startswith("/o=ExchangeLabs/ou=Exchange Administrative Group")
    assert mailbox["OrganizationalUnitRoot"] == exo_clean.tenant_domain
    assert mailbox["WindowsLiveID"] == mailbox["UserPrincipalName"] == UPN


def test_the_modelled_properties_keep_their_meaning_in_the_heavy_object(exo_clean, exo_invoke):
    stored = exo_clean.get_mailbox(UPN)
    mailbox = values(exo_invoke("Get-Mailbox", {"Identity": UPN}))[0]
    for name in ("ExternalDirectoryObjectId", "EmailAddresses", "PrimarySmtpAddress", "IsDirSynced",
                 "IsExchangeCloudManaged", "CustomAttribute1", "ExtensionCustomAttribute1", "WhenChangedUTC",
                 "RecipientTypeDetails", "HiddenFromAddressListsEnabled", "Guid", "ExchangeGuid"):  # fmt: skip
        assert mailbox[name] == stored[name], name
    assert "_sourceAnchor" not in mailbox


def test_select_trims_the_heavy_object_too(exo_invoke):
    """exchange-facts §4.1: an optional ?$select=Prop1,Prop2 trims properties on the REST endpoint."""
    url_response = exo_invoke("Get-Mailbox", {"Identity": UPN}, params={"$select": "Alias,ProhibitSendQuota"})
    assert values(url_response)[0] == {"ProhibitSendQuota": "99 GB (106,300,440,576 bytes)", "Alias": "jonas.nowak"}
