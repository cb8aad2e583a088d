"""Pure unit tests: parameter encoding and the "already applied?" comparison behind safe write retries."""

import pytest

from writeback.exchange.verify import HASHTABLE_TYPE, encode_parameter, state_matches

MAILBOX = {
    "EmailAddresses": [
        "SMTP:Ann.Lee@corp.example.com",
        "smtp:ann@corp.example.com",
        "smtp:ann@contoso.onmicrosoft.com",
    ],
    "PrimarySmtpAddress": "Ann.Lee@corp.example.com",
    "WindowsEmailAddress": "Ann.Lee@corp.example.com",
    "CustomAttribute1": "Finance",
    "CustomAttribute2": None,
    "ExtensionCustomAttribute1": ["Alpha", "beta"],
    "HiddenFromAddressListsEnabled": False,
    "IsExchangeCloudManaged": True,
}


def test_change_dict_becomes_an_annotated_hashtable():
    encoded = encode_parameter("EmailAddresses", {"Add": ("smtp:x@corp.example.com",), "Remove": []})
    assert encoded == {"@odata.type": HASHTABLE_TYPE, "Add": ["smtp:x@corp.example.com"], "Remove": []}


def test_change_dict_with_other_keys_is_refused():
    with pytest.raises(ValueError, match="only Add and Remove"):
        encode_parameter("EmailAddresses", {"Replace": []})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"CustomAttribute1": "Finance"}, True),
        ({"CustomAttribute1": "finance"}, False),
        ({"CustomAttribute2": ""}, True),
        ({"IsExchangeCloudManaged": True}, True),
        ({"IsExchangeCloudManaged": False}, False),
        ({"WindowsEmailAddress": "ann.lee@CORP.example.com"}, True),
        ({"ExtensionCustomAttribute1": ["beta", "ALPHA"]}, True),
        ({"ExtensionCustomAttribute1": ["beta"]}, False),
        ({"ExtensionCustomAttribute1": {"Add": ["gamma"]}}, False),
        ({"ExtensionCustomAttribute1": {"Remove": ["gamma"]}}, True),
        # A full list need not repeat the tenant address Exchange maintains itself.
        ({"EmailAddresses": ["SMTP:ann.lee@corp.example.com", "smtp:ANN@corp.example.com"]}, True),
        # Primary and secondary are different states of the same address.
        ({"EmailAddresses": ["smtp:ann.lee@corp.example.com", "SMTP:ann@corp.example.com"]}, False),
        ({"EmailAddresses": ["SMTP:ann.lee@corp.example.com"]}, False),
        ({"EmailAddresses": {"Add": ["smtp:ann@corp.example.com"]}}, True),
        ({"EmailAddresses": {"Add": ["smtp:new@corp.example.com"]}}, False),
        ({"EmailAddresses": {"Remove": ["smtp:ANN@corp.example.com"]}}, False),
        ({"EmailAddresses": {"Remove": ["smtp:gone@corp.example.com"]}}, True),
        ({"CustomAttribute1": "Finance", "IsExchangeCloudManaged": False}, False),
    ],
)
def test_state_matches(params, expected):
    assert state_matches(MAILBOX, params) is expected
