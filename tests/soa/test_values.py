"""Pure unit tests: both sides' values in one shape, and what counts as drift."""

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from soa.attributes import EXCHANGE_ATTRIBUTES, IDENTITY_ATTRIBUTES
from soa.values import (
    AD_ONLY,
    _normalise,
    ad_values,
    drifted_attributes,
    exo_values,
    guid_from_bytes,
    same_value,
    split_proxy,
)


def test_guid_from_bytes_reads_ad_byte_order():
    guid = uuid.UUID("f7cc07d7-7c15-447d-876d-c01b0e5a9e38")
    assert guid_from_bytes(guid.bytes_le) == guid


AD_ENTRY = {
    "proxyAddresses": ["SMTP:Ann.Lee@corp.example.com", "smtp:ann@corp.example.com", "X500:/o=x/cn=ann"],
    "mail": ["Ann.Lee@corp.example.com"],
    "mailNickname": ["ann.lee"],
    "extensionAttribute1": ["Finance"],
    "msExchExtensionCustomAttribute2": ["a", "B"],
    "msExchHideFromAddressLists": [],
    "msExchRecipientTypeDetails": [34359738368],
    "msExchRecipientDisplayType": [-2147483642],
    "displayName": ["Ann Lee"],
    "userPrincipalName": ["ann.lee@corp.example.com"],
}
EXO_MAILBOX = {
    "EmailAddresses": [
        "SMTP:ann.lee@corp.example.com", "smtp:ANN@corp.example.com", "x500:/o=x/cn=ann",
        "smtp:ann.lee@corp.onmicrosoft.com",  # the MOERA, which AD never holds
    ],
    "WindowsEmailAddress": "ann.lee@corp.example.com",
    "Alias": "ann.lee",
    "CustomAttribute1": "Finance",
    "CustomAttribute2": "",
    "ExtensionCustomAttribute2": ["b", "A"],
    "HiddenFromAddressListsEnabled": False,
    "RecipientTypeDetails": "SharedMailbox",
    "DisplayName": "Ann Lee",
    "UserPrincipalName": "ann.lee@corp.example.com",
}  # fmt: skip


def test_ad_entry_normalised_to_exchange_names_and_types():
    values = ad_values(AD_ENTRY)
    assert values["RecipientTypeDetails"] == "SharedMailbox"
    assert values["RecipientDisplayType"] == -2147483642
    assert values["HiddenFromAddressListsEnabled"] is False
    assert values["CustomAttribute1"] == "Finance" and values["CustomAttribute2"] is None
    assert values["ExtensionCustomAttribute1"] == []
    assert values["DisplayName"] == "Ann Lee"


def test_identical_mailbox_has_no_drift_despite_case_moera_and_order():
    assert drifted_attributes(exo_values(EXO_MAILBOX), ad_values(AD_ENTRY)) == []


def test_each_kind_of_difference_is_drift():
    cloud = exo_values(
        EXO_MAILBOX
        | {
            "EmailAddresses": ["SMTP:ann@corp.example.com", "smtp:ann.lee@corp.example.com", "x500:/o=x/cn=ann"],
            "CustomAttribute2": "cloud only",
            "ExtensionCustomAttribute2": ["a"],
            "HiddenFromAddressListsEnabled": True,
        }
    )
    assert drifted_attributes(cloud, ad_values(AD_ENTRY)) == [
        "EmailAddresses", "CustomAttribute2", "ExtensionCustomAttribute2", "HiddenFromAddressListsEnabled",
    ]  # fmt: skip


def test_attributes_missing_from_the_cloud_payload_are_not_compared():
    assert drifted_attributes({"CustomAttribute1": "Finance"}, ad_values(AD_ENTRY)) == []


def test_split_proxy():
    assert split_proxy("SMTP:A@B.c") == ("smtp", "a@b.c", True)
    assert split_proxy("smtp:A@B.c") == ("smtp", "a@b.c", False)
    assert split_proxy("X500:/o=Org") == ("x500", "/o=org", False)


def test_an_absent_attribute_normalises_as_an_empty_one():
    # ad_values answers an absent attribute without the general path; it must give what an empty value gives.
    for attribute in (*EXCHANGE_ATTRIBUTES, *IDENTITY_ATTRIBUTES):
        assert _normalise(attribute, None) == _normalise(attribute, []) == _normalise(attribute, ""), attribute.exo


_ADDRESSES = ["SMTP:a@corp.example.com", "smtp:A@CORP.example.com", "x500:/o=X", "b@t.onmicrosoft.com"]
_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(["", "x", "X", "TRUE", "false", "SMTP:a@corp.example.com", "smtp:A@corp.example.com"]),
    st.lists(st.sampled_from(_ADDRESSES), max_size=3),
)  # fmt: skip
_NAMES = [a.exo for a in EXCHANGE_ATTRIBUTES]


_BY_NAME = {a.exo: a for a in EXCHANGE_ATTRIBUTES}


def _stored(raw: dict) -> dict:
    """What the inventory stores for raw values: each normalised by its attribute's kind."""
    return {name: _normalise(_BY_NAME[name], value) for name, value in raw.items()}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_NAMES), _VALUE), st.dictionaries(st.sampled_from(_NAMES), _VALUE))
def test_drift_is_every_compared_attribute_whose_values_are_not_the_same(cloud, ad):
    # drifted_attributes skips same_value for equal values: that must never hide a difference.
    cloud, ad = _stored(cloud), _stored(ad)
    expected = [
        a.exo for a in EXCHANGE_ATTRIBUTES
        if a.exo not in AD_ONLY and a.exo in cloud and not same_value(a, cloud[a.exo], ad.get(a.exo))
    ]  # fmt: skip
    assert drifted_attributes(cloud, ad) == expected
