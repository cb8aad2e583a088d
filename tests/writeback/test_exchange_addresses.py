"""Address lists keep what Exchange keeps (issue 15, point 8): the client changes EmailAddresses only by Add/Remove,
never removes the tenant's MOERA or routing address, verifies they are still there after a write, and refuses a
value longer than AD can hold. Against the emulator over HTTPS, except the two pure rule tests at the end."""

import pytest
import requests

from tests.exchange_fixtures import exchange_config
from writeback.exchange import ExchangeOnlineClient, ExoVerificationFailed
from writeback.exchange.verify import (
    PROXY_ADDRESS_MAX_LENGTH,
    AddressChangeRefused,
    missing_tenant_addresses,
    state_matches,
    tenant_addresses,
)


@pytest.fixture
def cloud_managed(exo_clean):
    """A dir-synced mailbox already cloud-managed (so its addresses may be edited in Exchange), and its MOERA."""
    record = next(m for m in exo_clean.mailboxes() if m["IsDirSynced"] and m["RecipientTypeDetails"] == "UserMailbox")
    upn = record["UserPrincipalName"]
    ExchangeOnlineClient(exchange_config(exo_clean)).set_mailbox(upn, IsExchangeCloudManaged=True)
    moera = next(a for a in record["EmailAddresses"] if a.lower().endswith(".onmicrosoft.com"))
    return upn, moera


def test_a_full_address_list_is_never_sent(exo_clean, cloud_managed):
    """exchange-facts §5: a full EmailAddresses list replaces the collection; @{Add=...; Remove=...} modifies it.
    Only the second is safe, so the first is refused before anything reaches Exchange."""
    upn, _ = cloud_managed
    calls = exo_clean.counters()["invoke_command"]
    client = ExchangeOnlineClient(exchange_config(exo_clean))
    with pytest.raises(AddressChangeRefused, match="only by"):
        client.set_mailbox(upn, EmailAddresses=["SMTP:someone@corp.example.com"])
    assert exo_clean.counters()["invoke_command"] == calls


@pytest.mark.parametrize("kind", ["moera", "routing"])
def test_the_tenant_addresses_are_never_removed(exo_clean, cloud_managed, kind):
    """exchange-facts §3 and §9: Exchange adds the MOERA (alias@<tenant>.onmicrosoft.com) to every synced mailbox,
    and on-premises mail is routed to alias@<tenant>.mail.onmicrosoft.com; removing either breaks the mailbox."""
    upn, moera = cloud_managed
    address = moera if kind == "moera" else moera.replace(".onmicrosoft.com", ".mail.onmicrosoft.com")
    calls = exo_clean.counters()["invoke_command"]
    client = ExchangeOnlineClient(exchange_config(exo_clean))
    with pytest.raises(AddressChangeRefused, match="must stay on the mailbox"):
        client.set_mailbox(upn, EmailAddresses={"Remove": [address], "Add": ["smtp:other@corp.example.com"]})
    assert exo_clean.counters()["invoke_command"] == calls


def test_an_address_longer_than_ad_holds_is_refused_before_sending(exo_clean, cloud_managed):
    """exchange-facts §3: proxyAddresses' rangeUpper is 1,123 characters per value (MS-ADA3 2.169), type prefix
    included. Exchange does not validate non-SMTP types (§5), so only the client's check stops a value that AD,
    and so a later lossless revert, would refuse."""
    upn, _ = cloud_managed
    client = ExchangeOnlineClient(exchange_config(exo_clean))
    longest = "X500:/o=Corp/cn=" + "a" * (PROXY_ADDRESS_MAX_LENGTH - len("X500:/o=Corp/cn="))
    calls = exo_clean.counters()["invoke_command"]
    with pytest.raises(AddressChangeRefused, match="1124 characters long.*at most 1123"):
        client.set_mailbox(upn, EmailAddresses={"Add": [longest + "b"]})
    assert exo_clean.counters()["invoke_command"] == calls
    result = client.set_mailbox(upn, EmailAddresses={"Add": [longest]}, verify=True)
    assert longest.lower() in {a.lower() for a in result.mailbox["EmailAddresses"]}


def test_verification_notices_a_tenant_address_gone_after_the_write(exo_clean, cloud_managed):
    """exchange-facts §4.3: a write is confirmed by re-reading. An address edit whose result lacks the MOERA is
    not the state asked for, even though the added alias is there. The MOERA disappears here between the
    client's read and its write, removed by another writer (the emulator's admin API) just as the Set-Mailbox
    leaves: every request is real, only the order is arranged."""
    upn, moera = cloud_managed

    class AnotherWriterFirst(requests.Session):
        def post(self, url, **kwargs):
            if kwargs.get("headers", {}).get("X-CmdletName") == "Set-Mailbox":
                current = exo_clean.get_mailbox(upn)["EmailAddresses"]
                exo_clean.update_mailbox(upn, EmailAddresses=[a for a in current if a.lower() != moera.lower()])
            return super().post(url, **kwargs)

    config = exchange_config(exo_clean)
    session = AnotherWriterFirst()
    session.trust_env, session.verify = False, config.ca_file
    client = ExchangeOnlineClient(config, session=session)
    with pytest.raises(ExoVerificationFailed, match="tenant address.*are gone") as info:
        client.set_mailbox(upn, EmailAddresses={"Add": ["smtp:extra.alias@corp.example.com"]}, verify=True)
    assert moera.split(":", 1)[1].lower() in str(info.value)
    assert "smtp:extra.alias@corp.example.com" in exo_clean.get_mailbox(upn)["EmailAddresses"]


def test_an_address_change_keeps_the_tenant_addresses(exo_clean, cloud_managed):
    upn, moera = cloud_managed
    client = ExchangeOnlineClient(exchange_config(exo_clean))
    result = client.set_mailbox(upn, EmailAddresses={"Add": ["SMTP:new.primary@corp.example.com"]}, verify=True)
    assert moera.lower() in {a.lower() for a in result.mailbox["EmailAddresses"]}


# -- the rules alone -------------------------------------------------------------------------------------------

MAILBOX = {
    "EmailAddresses": [
        "SMTP:ann@corp.example.com",
        "smtp:ann.lee@corp.example.com",
        "smtp:ann@contoso.onmicrosoft.com",
        "smtp:ann@contoso.mail.onmicrosoft.com",
    ]
}


def test_tenant_addresses_are_the_moera_and_the_routing_address():
    assert tenant_addresses(MAILBOX["EmailAddresses"] + ["X500:/o=x@y.onmicrosoft.com"]) == {
        ("smtp", "ann@contoso.onmicrosoft.com"),
        ("smtp", "ann@contoso.mail.onmicrosoft.com"),
    }


def test_state_matches_fails_when_a_kept_tenant_address_is_missing():
    keep = tenant_addresses(MAILBOX["EmailAddresses"])
    change = {"EmailAddresses": {"Add": ["smtp:ann.lee@corp.example.com"]}}
    assert state_matches(MAILBOX, change, keep=keep)
    without_routing = {"EmailAddresses": MAILBOX["EmailAddresses"][:3]}
    assert not state_matches(without_routing, change, keep=keep)
    assert missing_tenant_addresses(without_routing, keep) == ["ann@contoso.mail.onmicrosoft.com"]
