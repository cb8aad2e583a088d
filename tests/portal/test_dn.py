import pytest

from portal.dn import InvalidDn, is_within, normalize_dn


def test_normalize_ignores_case_spaces_and_escape_style():
    assert normalize_dn(r"CN=Smith\, John ,OU=Sales , DC=Corp,DC=example,DC=com") == normalize_dn(
        r"cn=smith\2C john,ou=sales,dc=corp,dc=example,dc=com"
    )


def test_normalize_decodes_multibyte_hex_escapes():
    assert normalize_dn(r"CN=Zo\C3\ABe,OU=x") == normalize_dn("cn=zoëe,ou=x")


def test_multivalued_rdn_is_order_insensitive():
    assert normalize_dn("cn=a+sn=b,ou=x") == normalize_dn("SN=b+CN=a,OU=x")


def test_escaped_plus_is_not_a_multivalued_rdn():
    assert normalize_dn(r"cn=a\+b,ou=x") != normalize_dn("cn=a+sn=b,ou=x")


@pytest.mark.parametrize(
    ("dn", "base", "inside"),
    [
        ("CN=a,OU=Sales,DC=corp,DC=com", "ou=sales,dc=corp,dc=com", True),
        ("OU=Sales,DC=corp,DC=com", "OU=Sales,DC=corp,DC=com", True),
        ("CN=a,OU=PreSales,DC=corp,DC=com", "OU=Sales,DC=corp,DC=com", False),
        (r"CN=x\,OU\=Sales,OU=Other,DC=corp,DC=com", "OU=Sales,OU=Other,DC=corp,DC=com", False),
        ("CN=a,OU=Other,DC=corp,DC=com", "OU=Sales,DC=corp,DC=com", False),
    ],
)
def test_is_within(dn, base, inside):
    assert is_within(dn, base) is inside


@pytest.mark.parametrize("bad", ["", "   ", "garbage", "cn=", "=x", r"cn=\FF,ou=x"])
def test_malformed_dn_is_rejected_with_reason(bad):
    with pytest.raises(InvalidDn):
        normalize_dn(bad)


@pytest.mark.parametrize(
    ("dn", "expected"),
    [
        ("CN=a#b,OU=x", "cn=a#b,ou=x"),  # a '#' inside a value needs no escape (slapd returns it bare)
        ("CN=a=b,OU=x", "cn=a\\3db,ou=x"),  # nor does '=' after the first
        ("CN=trailing\\ ,OU=x", "cn=trailing\\20,ou=x"),  # an escaped trailing space is part of the value
        ("CN=a;OU=x", "cn=a,ou=x"),  # ';' is an old separator
        ("  CN = spaced , OU = x ", "cn=spaced,ou=x"),
        ("1.2.840.113556.1.4.2=abc,OU=x", "1.2.840.113556.1.4.2=abc,ou=x"),
    ],
)
def test_rfc4514_forms_servers_send(dn, expected):
    assert normalize_dn(dn) == expected


@pytest.mark.parametrize("bad", ["CN=a,", "CN=a\\", "CN=,OU=x", "bad type=x", "CN=a,OU"])
def test_more_malformed_dns(bad):
    with pytest.raises(InvalidDn):
        normalize_dn(bad)
