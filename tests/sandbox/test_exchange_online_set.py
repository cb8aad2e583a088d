"""Contract of Set-Mailbox in the emulator: parameter encodings, Exchange's rules, write scope, no-op warning.

Rules and texts from exchange-facts §4.2 (hashtable encoding), §4.3 (no-op warning) and §5 (validation,
write-scope error).
"""

from __future__ import annotations

import time

import pytest

UPN = "jonas.nowak@corp.example.com"
OTHER = "kenji.kowalski@corp.example.com"
HASHTABLE = "#Exchange.GenericHashTable"
OLD = "2020-01-01T00:00:00Z"


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["value"] == []  # Set-* cmdlets return no objects
    return body


def error_text(response, status: int, exception_suffix: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    _code, exception_type, text = error["details"][0]["message"].split("|", 2)
    assert exception_type.endswith(exception_suffix), exception_type
    return text


def write_scope_text(name: str, parameter: str) -> str:
    """The error of exchange-facts §5, for mailbox ``name`` and ``parameter``."""
    return (
        f"The operation on mailbox \"{name}\" failed because it's out of the current user's write scope. The action "
        f"'Set-Mailbox', '{parameter}', can't be performed on the object '{name}' because the object is being "
        "synchronized from your on-premises organization. This action should be performed on the object in your "
        "on-premises organization."
    )


@pytest.fixture
def managed(exo_clean, exo_invoke) -> dict:
    """jonas.nowak with the source of authority of his Exchange attributes moved to the cloud."""
    ok(exo_invoke("Set-Mailbox", {"Identity": UPN, "IsExchangeCloudManaged": True}))
    return exo_clean.update_mailbox(UPN, WhenChangedUTC=OLD)


@pytest.fixture
def set_mailbox(exo_invoke):
    def call(**parameters):
        return exo_invoke("Set-Mailbox", {"Identity": UPN, **parameters})

    return call


# -- write scope -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("EmailAddresses", {"@odata.type": HASHTABLE, "Add": ["smtp:jn@corp.example.com"]}),
     ("CustomAttribute1", "x"), ("HiddenFromAddressListsEnabled", True), ("ExtensionCustomAttribute2", ["a"]),
     ("WindowsEmailAddress", "jonas_nowak@corp.example.com")],
)  # fmt: skip
def test_exchange_attribute_of_an_ad_mastered_mailbox_gives_the_write_scope_error(
    exo_clean, set_mailbox, parameter, value
):
    before = exo_clean.get_mailbox(UPN)
    response = set_mailbox(**{parameter: value})
    assert error_text(response, 400, "System.InvalidOperationException") == write_scope_text(before["Name"], parameter)
    assert exo_clean.get_mailbox(UPN) == before


def test_flipping_the_flag_is_allowed_and_then_edits_succeed(exo_clean, set_mailbox):
    ok(set_mailbox(IsExchangeCloudManaged=True))
    assert exo_clean.get_mailbox(UPN)["IsExchangeCloudManaged"] is True
    ok(set_mailbox(CustomAttribute1="cloud value"))
    assert exo_clean.get_mailbox(UPN)["CustomAttribute1"] == "cloud value"


def test_flag_and_attribute_in_one_call_are_judged_on_the_flag_before_the_call(exo_clean, set_mailbox):
    response = set_mailbox(IsExchangeCloudManaged=True, CustomAttribute1="x")
    assert "write scope" in error_text(response, 400, "InvalidOperationException")
    assert exo_clean.get_mailbox(UPN)["IsExchangeCloudManaged"] is False


def test_identity_attributes_stay_out_of_reach_when_cloud_managed(managed, set_mailbox):
    text = error_text(set_mailbox(DisplayName="Someone Else"), 400, "InvalidOperationException")
    assert "'Set-Mailbox', 'DisplayName'" in text


def test_flag_on_a_cloud_only_mailbox_is_refused(exo_clean, exo_invoke):
    exo_clean.create_mailbox(UserPrincipalName="cloud.only@corp.example.com")
    response = exo_invoke("Set-Mailbox", {"Identity": "cloud.only@corp.example.com", "IsExchangeCloudManaged": True})
    assert response.status_code == 400


def test_cloud_only_mailbox_is_editable_without_the_flag(exo_clean, exo_invoke):
    exo_clean.create_mailbox(UserPrincipalName="cloud.only@corp.example.com")
    ok(
        exo_invoke(
            "Set-Mailbox", {"Identity": "cloud.only@corp.example.com", "CustomAttribute3": "x", "DisplayName": "C"}
        )
    )
    stored = exo_clean.get_mailbox("cloud.only@corp.example.com")
    assert (stored["CustomAttribute3"], stored["DisplayName"]) == ("x", "C")


# -- EmailAddresses ----------------------------------------------------------------------------------


def test_full_list_replaces_addresses_and_moves_primary_and_when_changed(exo_clean, managed, set_mailbox):
    ok(
        set_mailbox(
            EmailAddresses=["SMTP:jonas.n@corp.example.com", "smtp:jonas.nowak@corp.example.com", "X500:/o=x/cn=y"]
        )
    )
    stored = exo_clean.get_mailbox(UPN)
    assert stored["EmailAddresses"][:3] == [
        "SMTP:jonas.n@corp.example.com",
        "smtp:jonas.nowak@corp.example.com",
        "X500:/o=x/cn=y",
    ]
    assert all(a.lower().endswith("onmicrosoft.com") for a in stored["EmailAddresses"][3:])  # kept, see below
    assert stored["PrimarySmtpAddress"] == stored["WindowsEmailAddress"] == "jonas.n@corp.example.com"
    assert stored["WhenChangedUTC"] > OLD


def _protected(exo_clean, addresses: list[str]) -> list[str]:
    domains = (f"@{exo_clean.tenant_domain}", f"@{exo_clean.tenant_domain.replace('.', '.mail.', 1)}")
    return [a for a in addresses if a.lower().endswith(domains)]


def test_a_full_list_keeps_the_moera_and_the_routing_address(exo_clean, managed, set_mailbox):
    """exchange-facts §3: EXO adds the MOERA smtp:<alias>@<tenant>.onmicrosoft.com to every synced mailbox (KB
    3190357 "How the proxyAddresses attribute is populated in Azure AD": it is stamped automatically, and an admin
    cannot change it on a synced user); the @<tenant>.mail.onmicrosoft.com address is the hybrid routing address
    moves and mail flow rely on (issue 15 point 8). What Exchange does with a full list leaving them out is not
    documented: the emulator puts them back as secondaries (GUESS, setting protected_addresses)."""
    protected = _protected(exo_clean, managed["EmailAddresses"])
    assert len(protected) == 2, managed["EmailAddresses"]  # the MOERA and the .mail.onmicrosoft.com address
    ok(set_mailbox(EmailAddresses=["SMTP:jonas.nowak@corp.example.com"]))
    stored = exo_clean.get_mailbox(UPN)["EmailAddresses"]
    assert stored[0] == "SMTP:jonas.nowak@corp.example.com"
    assert sorted(a.lower() for a in stored[1:]) == sorted(a.lower() for a in protected)


def test_protected_addresses_refuse_mode_fails_the_call_and_off_mode_drops_them(exo_clean, managed, set_mailbox):
    exo_clean.set_settings(protected_addresses="refuse")
    response = set_mailbox(EmailAddresses=["SMTP:jonas.nowak@corp.example.com"])
    assert "can't be removed" in error_text(response, 400, "DataValidationException")
    assert exo_clean.get_mailbox(UPN)["EmailAddresses"] == managed["EmailAddresses"]
    exo_clean.set_settings(protected_addresses="off")
    ok(set_mailbox(EmailAddresses=["SMTP:jonas.nowak@corp.example.com"]))
    assert exo_clean.get_mailbox(UPN)["EmailAddresses"] == ["SMTP:jonas.nowak@corp.example.com"]


def test_a_hashtable_remove_of_the_moera_is_carried_out_as_asked(exo_clean, managed, set_mailbox):
    """Add/Remove writes are unchanged by protected_addresses (issue 15 point 8 asks the client to send only
    those, and never a Remove of these two)."""
    moera = next(a for a in managed["EmailAddresses"] if a.lower().endswith(f"@{exo_clean.tenant_domain}"))
    ok(set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Remove": [moera]}))
    assert moera not in exo_clean.get_mailbox(UPN)["EmailAddresses"]


def test_addresses_without_prefix_are_smtp_and_the_first_is_primary(exo_clean, managed, set_mailbox):
    ok(set_mailbox(EmailAddresses=["j1@corp.example.com", "j2@corp.example.com"]))
    assert exo_clean.get_mailbox(UPN)["EmailAddresses"][:2] == ["SMTP:j1@corp.example.com", "smtp:j2@corp.example.com"]


def test_hashtable_adds_and_removes(exo_clean, managed, set_mailbox):
    change = {"@odata.type": HASHTABLE, "Add": ["smtp:jn@corp.example.com", "jn2@corp.example.com"],
              "Remove": ["smtp:jonas_nowak@corp.example.com", "SIP:jonas.nowak@corp.example.com"]}  # fmt: skip
    ok(set_mailbox(EmailAddresses=change))
    stored = exo_clean.get_mailbox(UPN)["EmailAddresses"]
    assert "smtp:jn@corp.example.com" in stored and "smtp:jn2@corp.example.com" in stored
    assert "smtp:jonas_nowak@corp.example.com" not in stored and not any(a.startswith("SIP:") for a in stored)
    assert stored[0] == "SMTP:jonas.nowak@corp.example.com"


def test_hashtable_add_of_a_primary_demotes_the_old_one(exo_clean, managed, set_mailbox):
    ok(set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Add": ["SMTP:boss@corp.example.com"]}))
    stored = exo_clean.get_mailbox(UPN)
    assert "smtp:jonas.nowak@corp.example.com" in stored["EmailAddresses"]
    assert "SMTP:boss@corp.example.com" in stored["EmailAddresses"]
    assert sum(a.startswith("SMTP:") for a in stored["EmailAddresses"]) == 1
    assert stored["PrimarySmtpAddress"] == "boss@corp.example.com"


def test_hashtable_needs_its_odata_type(exo_clean, managed, set_mailbox):
    response = set_mailbox(EmailAddresses={"Add": ["smtp:jn@corp.example.com"]})
    assert error_text(response, 400, "ParameterBindingException")


def test_removing_the_primary_is_refused(exo_clean, managed, set_mailbox):
    response = set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Remove": ["jonas.nowak@corp.example.com"]})
    assert "primary" in error_text(response, 400, "DataValidationException")


BAD_SMTP = [
    "jonas",
    "jonas@",
    "@corp.example.com",
    "jo nas@corp.example.com",
    "a..b@corp.example.com",
    "smtp:x@-corp.com",
]


@pytest.mark.parametrize("bad", BAD_SMTP)
def test_bad_smtp_syntax_is_refused(exo_clean, managed, set_mailbox, bad):
    response = set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Add": [bad]})
    assert "isn't correct" in error_text(response, 400, "DataValidationException")


def test_other_address_types_are_not_validated(exo_clean, managed, set_mailbox):
    ok(set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Add": ["EUM:1234;phone-context=whatever"]}))


def test_domain_must_be_accepted(exo_clean, managed, set_mailbox):
    response = set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Add": ["jonas@fabrikam.com"]})
    assert "fabrikam.com" in error_text(response, 400, "NotAcceptedDomainException")


def test_two_primaries_are_refused(exo_clean, managed, set_mailbox):
    response = set_mailbox(EmailAddresses=["SMTP:a1@corp.example.com", "SMTP:a2@corp.example.com"])
    assert error_text(response, 400, "DataValidationException")


def test_a_list_without_a_primary_is_refused(exo_clean, managed, set_mailbox):
    assert set_mailbox(EmailAddresses=["smtp:a1@corp.example.com"]).status_code == 400


def test_an_address_of_another_mailbox_is_refused(exo_clean, managed, set_mailbox):
    response = set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Add": [f"smtp:{OTHER.upper()}"]})
    assert "already being used" in error_text(response, 400, "ProxyAddressExistsException")


def test_a_removed_address_cools_down_before_another_mailbox_may_take_it(exo_clean, exo_invoke, managed):
    exo_clean.set_settings(proxy_cooldown=0.5)
    freed = "smtp:jonas_nowak@corp.example.com"
    ok(exo_invoke("Set-Mailbox", {"Identity": UPN, "EmailAddresses": {"@odata.type": HASHTABLE, "Remove": [freed]}}))
    ok(exo_invoke("Set-Mailbox", {"Identity": OTHER, "IsExchangeCloudManaged": True}))
    take = {"Identity": OTHER, "EmailAddresses": {"@odata.type": HASHTABLE, "Add": [freed]}}
    assert "already being used" in error_text(exo_invoke("Set-Mailbox", take), 400, "ProxyAddressExistsException")
    time.sleep(0.6)
    ok(exo_invoke("Set-Mailbox", take))
    assert freed in exo_clean.get_mailbox(OTHER)["EmailAddresses"]


def test_the_former_holder_may_take_its_address_back_during_the_cool_down(exo_clean, managed, set_mailbox):
    exo_clean.set_settings(proxy_cooldown=600)
    freed = "smtp:jonas_nowak@corp.example.com"
    ok(set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Remove": [freed]}))
    ok(set_mailbox(EmailAddresses={"@odata.type": HASHTABLE, "Add": [freed]}))


def test_windows_email_address_becomes_the_primary(exo_clean, managed, set_mailbox):
    ok(set_mailbox(WindowsEmailAddress="jonas_nowak@corp.example.com"))
    stored = exo_clean.get_mailbox(UPN)
    assert stored["WindowsEmailAddress"] == stored["PrimarySmtpAddress"] == "jonas_nowak@corp.example.com"
    assert "SMTP:jonas_nowak@corp.example.com" in stored["EmailAddresses"]
    assert "smtp:jonas.nowak@corp.example.com" in stored["EmailAddresses"]


def test_windows_email_address_follows_the_domain_rule(exo_clean, managed, set_mailbox):
    assert set_mailbox(WindowsEmailAddress="jonas@fabrikam.com").status_code == 400


# -- custom attributes and the rest ------------------------------------------------------------------


def test_custom_attribute_takes_1024_characters_and_not_1025(exo_clean, managed, set_mailbox):
    ok(set_mailbox(CustomAttribute7="x" * 1024))
    text = error_text(set_mailbox(CustomAttribute7="y" * 1025), 400, "DataValidationException")
    assert text == (
        "The length of the property is too long. The maximum length is 1024 and the length of the value provided is "
        "1025."
    )
    assert exo_clean.get_mailbox(UPN)["CustomAttribute7"] == "x" * 1024


def test_custom_attribute_null_clears_it(exo_clean, managed, set_mailbox):
    ok(set_mailbox(CustomAttribute15="temp"))
    ok(set_mailbox(CustomAttribute15=None))
    assert exo_clean.get_mailbox(UPN)["CustomAttribute15"] == ""


def test_extension_custom_attribute_list_and_hashtable(exo_clean, managed, set_mailbox):
    ok(set_mailbox(ExtensionCustomAttribute3=["a", "b", "c"]))
    ok(set_mailbox(ExtensionCustomAttribute3={"@odata.type": HASHTABLE, "Add": ["d"], "Remove": ["a"]}))
    assert exo_clean.get_mailbox(UPN)["ExtensionCustomAttribute3"] == ["b", "c", "d"]


def test_extension_custom_attribute_holds_up_to_1300_values(exo_clean, managed, set_mailbox):
    ok(set_mailbox(ExtensionCustomAttribute1=[f"v{i}" for i in range(1300)]))
    response = set_mailbox(ExtensionCustomAttribute1={"@odata.type": HASHTABLE, "Add": ["one too many"]})
    assert "1300" in error_text(response, 400, "DataValidationException")


def test_hidden_from_address_lists(exo_clean, managed, set_mailbox):
    ok(set_mailbox(HiddenFromAddressListsEnabled=True))
    assert exo_clean.get_mailbox(UPN)["HiddenFromAddressListsEnabled"] is True
    assert error_text(set_mailbox(HiddenFromAddressListsEnabled="perhaps"), 400, "ParameterBindingException")


def test_no_op_set_warns_and_leaves_when_changed(exo_clean, managed, set_mailbox):
    current = exo_clean.get_mailbox(UPN)
    body = ok(set_mailbox(CustomAttribute10=current["CustomAttribute10"], IsExchangeCloudManaged=True))
    assert body["@adminapi.warnings"] == [
        f"The command completed successfully but no settings of '{current['Name']}' have been modified."
    ]
    assert exo_clean.get_mailbox(UPN)["WhenChangedUTC"] == OLD


def test_a_real_change_has_no_warning(exo_clean, managed, set_mailbox):
    assert ok(set_mailbox(CustomAttribute10="new"))["@adminapi.warnings"] == []


def test_identity_attributes_that_are_not_parameters_are_unknown(exo_clean, managed, set_mailbox):
    assert "UserPrincipalName" in error_text(
        set_mailbox(UserPrincipalName="x@corp.example.com"), 400, "ParameterBindingException"
    )


def test_identity_is_mandatory(exo_clean, exo_invoke):
    assert error_text(exo_invoke("Set-Mailbox", {"CustomAttribute1": "x"}), 400, "ParameterBindingException")


def test_set_on_an_unknown_mailbox_is_a_404(exo_clean, exo_invoke):
    assert exo_invoke("Set-Mailbox", {"Identity": "ghost@corp.example.com", "CustomAttribute1": "x"}).status_code == 404
