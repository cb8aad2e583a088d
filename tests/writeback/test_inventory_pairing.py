"""Pure unit tests of the keys the inventory pairs on (writeback/inventory_pairing.py)."""

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soa.choices import Pairing
from writeback.inventory_pairing import directory_object_id, outranks, source_anchor

GUID = uuid.UUID("f7cc07d7-7c15-447d-876d-c01b0e5a9e38")


def test_source_anchor_is_base64_of_the_guid_bytes_as_ad_stores_them():
    """exchange-facts §3's worked example: objectGUID f7cc07d7-… is sourceAnchor 1wfM9xV8fUSHbcAbDlqeOA== (the 16
    bytes in .NET ToByteArray order, which is how AD stores them)."""
    assert source_anchor({"objectGUID": GUID.bytes_le}) == "1wfM9xV8fUSHbcAbDlqeOA=="


def test_source_anchor_prefers_the_consistency_guid_and_falls_back_to_the_object_guid(settings):
    """Entra Connect ≥ 1.1.524 anchors on mS-DS-ConsistencyGuid, filling it from objectGUID when empty (§3, §8)."""
    other = uuid.uuid4()
    assert source_anchor({"objectGUID": GUID.bytes_le, "mS-DS-ConsistencyGuid": other.bytes_le}) == source_anchor(
        {"objectGUID": other.bytes_le}
    )
    assert source_anchor({"objectGUID": GUID.bytes_le, "mS-DS-ConsistencyGuid": None}) == "1wfM9xV8fUSHbcAbDlqeOA=="


def test_source_anchor_attribute_is_configurable(settings):
    """Older Connect installs anchor on objectGUID, some on msDS-SourceAnchor or a custom attribute (§8)."""
    other = uuid.uuid4()
    settings.ENTRA_SOURCE_ANCHOR = "objectGUID"
    assert source_anchor({"objectGUID": GUID.bytes_le, "mS-DS-ConsistencyGuid": other.bytes_le}) == (
        "1wfM9xV8fUSHbcAbDlqeOA=="
    )
    settings.ENTRA_SOURCE_ANCHOR = "employeeID"  # a string anchor is used as it is; no objectGUID fallback
    assert source_anchor({"objectGUID": GUID.bytes_le, "employeeID": ["E-1024"]}) == "E-1024"
    assert source_anchor({"objectGUID": GUID.bytes_le}) == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"User_{GUID}", GUID),
        ([f"user_{GUID}"], GUID),
        (None, None),
        ([], None),
        (f"Group_{GUID}", None),  # not a user's cloud anchor
        ("User_not-a-guid", None),
    ],
)
def test_directory_object_id_reads_connects_user_prefix(value, expected):
    """Connect writes msDS-ExternalDirectoryObjectID as User_<Entra object id> (exchange-facts §8, MS S62)."""
    assert directory_object_id({"msDS-ExternalDirectoryObjectID": value}) == expected


def test_an_identifier_pair_outranks_a_name_match_and_never_the_reverse():
    assert outranks(Pairing.DIRECTORY_ID, Pairing.GRAPH) and outranks(Pairing.GRAPH, Pairing.UPN)
    assert outranks(Pairing.UPN, Pairing.NONE) and outranks(Pairing.SMTP, "")
    assert not outranks(Pairing.GRAPH, Pairing.DIRECTORY_ID) and not outranks(Pairing.UPN, Pairing.SMTP)


_rdn_values = st.text(st.sampled_from(list('ab Z=#,+;\\"é<>')), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(_rdn_values, min_size=1, max_size=4),
    types=st.lists(st.sampled_from(["CN", "ou", "DC", " OU "]), min_size=4, max_size=4),
)
def test_a_dns_parts_are_what_parsing_the_whole_dn_gives(values, types):
    """writeback.inventory._dn_parts parses a plain first RDN alone and takes its parent's normal form from a cache;
    for any DN, escaped, quoted, multi-valued or malformed, it must give what normalising the whole DN gives."""
    from portal.dn import InvalidDn, normalize_dn
    from writeback.inventory import _dn_parts

    dn = ",".join(f"{kind}={value}" for kind, value in zip(types, values, strict=False))
    try:
        norm = normalize_dn(dn)
    except InvalidDn:
        expected = ("", "")
    else:
        expected = (norm, norm.split(",", 1)[1] if "," in norm else "")
    assert _dn_parts(dn) == expected
    assert _dn_parts(dn) == expected  # and again, from the cache
