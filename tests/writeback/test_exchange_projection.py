"""Payloads as heavy as the real ones (issue 15, point 13, client side): Get-Mailbox objects are cut down to what
the portal uses as each page is read, and the empty-message error after an applied flip is resolved by reading.

exchange-facts §7.4: real Get-Mailbox has no server-side property selection, returns 200+ properties per object
and 1,000 objects per page; Set-Mailbox -IsExchangeCloudManaged was seen failing with an empty message although
the change had been applied (also §4.3, the silent-success trap)."""

import pytest

from soa.values import exo_values
from tests.exchange_fixtures import RecordingSleep, exchange_config
from writeback.exchange import ExchangeOnlineClient
from writeback.exchange.client import MAILBOX_PROPERTIES, project_mailbox

# What the inventory, the pairing and the runner read besides the mapped attributes (soa.values).
READ_BY_THE_PORTAL = (
    "ExternalDirectoryObjectId",
    "IsDirSynced",
    "IsExchangeCloudManaged",
    "PrimarySmtpAddress",
    "RecipientTypeDetails",
    "WhenChangedUTC",
    "UserPrincipalName",
    "DisplayName",
)


def _raw_pages(exo_invoke) -> list[dict]:
    """Every mailbox as the emulator sends it, untouched (the fixture's plain InvokeCommand, following nextLink)."""
    objects, url = [], None
    while True:
        body = exo_invoke("Get-Mailbox", {"ResultSize": "Unlimited"}, url=url).json()
        objects.extend(body["value"])
        url = body.get("@odata.nextLink")
        if not url:
            return objects


def test_mailboxes_keep_every_property_the_portal_uses_and_nothing_else(exo_clean, exo_invoke):
    raw = {m["ExternalDirectoryObjectId"]: m for m in _raw_pages(exo_invoke)}
    client = ExchangeOnlineClient(exchange_config(exo_clean))
    read = list(client.iter_mailboxes(page_size=7))
    assert len(read) == len(raw)
    for mailbox in read:
        original = raw[mailbox["ExternalDirectoryObjectId"]]
        assert set(mailbox) <= MAILBOX_PROPERTIES
        assert not any("@" in name for name in mailbox)  # OData annotations go too
        assert exo_values(mailbox) == exo_values(original)
        assert all(mailbox.get(name) == original.get(name) for name in READ_BY_THE_PORTAL)
    # What the emulator sends beyond that set today is gone (its heavier objects will only add to this).
    dropped = set().union(*(set(m) for m in raw.values())) - MAILBOX_PROPERTIES
    assert dropped and not dropped & set().union(*(set(m) for m in read))


def test_a_single_read_is_cut_down_too(exo_clean):
    identity = next(m for m in exo_clean.mailboxes() if m["IsDirSynced"])["UserPrincipalName"]
    mailbox = ExchangeOnlineClient(exchange_config(exo_clean)).get_mailbox(identity)
    assert set(mailbox) <= MAILBOX_PROPERTIES and mailbox["UserPrincipalName"] == identity


def test_projection_of_a_real_sized_object():
    """Pure: an object of 250 properties, as real Get-Mailbox sends, keeps only the portal's."""
    heavy = {f"Property{i}": "x" * 40 for i in range(230)}
    heavy |= {"UserPrincipalName": "ann@corp.example.com", "CustomAttribute1": "Finance", "Guid@odata.type": "#Guid"}
    assert project_mailbox(heavy) == {"UserPrincipalName": "ann@corp.example.com", "CustomAttribute1": "Finance"}


@pytest.mark.parametrize("target", [True, False])
def test_an_empty_error_after_an_applied_flip_is_resolved_by_reading(exo_clean, target):
    """exchange-facts §7.4 and §4.3: Set-Mailbox -IsExchangeCloudManaged failed with an empty message although the
    flip had been applied. The client re-reads before reporting failure, finds the flag set, and does not send
    the flip again."""
    record = next(m for m in exo_clean.mailboxes() if m["IsDirSynced"] and m["RecipientTypeDetails"] == "UserMailbox")
    upn = record["UserPrincipalName"]
    client = ExchangeOnlineClient(exchange_config(exo_clean), sleep=RecordingSleep())
    if not target:
        client.set_mailbox(upn, IsExchangeCloudManaged=True)
    sets = exo_clean.counters()["by_cmdlet"].get("Set-Mailbox", 0)
    exo_clean.set_faults(error_after_apply=1)
    result = client.set_mailbox(upn, IsExchangeCloudManaged=target, verify=True)
    assert result.mailbox["IsExchangeCloudManaged"] is target
    counters = exo_clean.counters()
    assert counters["by_status"].get("500") == 1  # the empty-message error did happen
    assert counters["by_cmdlet"]["Set-Mailbox"] == sets + 1  # and the flip was not sent twice
