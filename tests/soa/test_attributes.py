"""The attribute map agrees with the reference: 24 written back by Microsoft, identity never writable."""

from soa.attributes import (
    ATTRIBUTES,
    BY_AD,
    BY_EXO,
    EDITABLE_ATTRIBUTES,
    EXCHANGE_ATTRIBUTES,
    IDENTITY_ATTRIBUTES,
    by_ad_name,
    writeback_attributes,
)


def test_microsoft_writes_back_exactly_24_attributes():
    written = {a.ad for a in ATTRIBUTES if a.microsoft_writeback}
    assert len(written) == 24
    assert {"proxyAddresses", "mail", "msExchRecipientTypeDetails", "msExchRecipientDisplayType"} <= written
    assert {f"extensionAttribute{i}" for i in range(1, 16)} <= written
    assert {f"msExchExtensionCustomAttribute{i}" for i in range(1, 6)} <= written


def test_hide_from_address_lists_is_written_back_only_when_opted_in(settings):
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = False
    assert "msExchHideFromAddressLists" not in {a.ad for a in writeback_attributes()}
    assert len(writeback_attributes()) == 24
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = True
    assert "msExchHideFromAddressLists" in {a.ad for a in writeback_attributes()}


def test_identity_attributes_are_never_editable_nor_written_back(settings):
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = True
    assert IDENTITY_ATTRIBUTES
    for attribute in IDENTITY_ATTRIBUTES:
        assert not attribute.editable and not attribute.written_back and not attribute.microsoft_writeback
    assert not set(IDENTITY_ATTRIBUTES) & set(EXCHANGE_ATTRIBUTES)


def test_help_desk_edits_what_the_mission_lists():
    editable = {a.exo for a in EDITABLE_ATTRIBUTES}
    assert editable == {
        "EmailAddresses", "WindowsEmailAddress", "HiddenFromAddressListsEnabled",
        *(f"CustomAttribute{i}" for i in range(1, 16)), *(f"ExtensionCustomAttribute{i}" for i in range(1, 6)),
    }  # fmt: skip


def test_limits_follow_exchange_and_ad():
    assert BY_EXO["CustomAttribute7"].max_length == 1024
    assert BY_EXO["ExtensionCustomAttribute2"].multi_valued and BY_EXO["ExtensionCustomAttribute2"].max_values == 1300
    assert BY_EXO["EmailAddresses"].max_length == 1123 and BY_EXO["EmailAddresses"].multi_valued
    assert BY_EXO["WindowsEmailAddress"].max_length == 256


def test_names_are_unique_on_both_sides_and_ad_lookup_ignores_case():
    assert len(BY_EXO) == len(ATTRIBUTES) == len(BY_AD)
    assert by_ad_name("PROXYADDRESSES").exo == "EmailAddresses"
