"""Revert without loss: copy a mailbox's cloud Exchange attributes into AD before its authority goes back to AD.

Once IsExchangeCloudManaged is false, the next Entra Connect sync writes AD's Exchange attributes over the cloud's
(exchange-facts §1.7), so an edit made in the cloud and never written back would be lost. Before the flag goes
back, the runner therefore writes the cloud value of every mapped Exchange attribute (soa.attributes
EXCHANGE_ATTRIBUTES: all of them, not only those this installation writes back after an edit) into AD, reads AD
back and compares it with the cloud by the drift rules (soa.values), and only then flips.

The MOERA (alias@<tenant>.onmicrosoft.com) is left out of proxyAddresses: Exchange Online adds it to every synced
mailbox by itself, and AD never holds it.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from soa.attributes import EXCHANGE_ATTRIBUTES, Kind
from soa.values import (
    AD_ONLY,
    RECIPIENT_TYPES,
    ad_values,
    drifted_attributes,
    exo_values,
    is_moera,
    split_proxy,
)
from writeback.directory import DirectoryClient

_REMOTE_TYPE = {name: number for number, name in RECIPIENT_TYPES.items()}


class RevertNotVerified(Exception):
    """AD, read back after the copy, still differs from the cloud: the flag must not go back."""


@dataclass(frozen=True)
class Copy:
    """What the copy did: the AD values it replaced and wrote (LDAP names, changed attributes only), and both sides
    as the copy last saw them, for the inventory's copies of each: without the cloud side too, the portal would
    compare AD's new values with the cloud's as of the last import and show drift that is not there."""

    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    ad_values: dict[str, Any] = field(default_factory=dict)  # AD as read back, keyed by EXO name (for the inventory)
    exo_values: dict[str, Any] = field(default_factory=dict)  # the cloud as copied from, keyed by EXO name


def _secondary_moera(raw: str) -> bool:
    # A MOERA that is the primary address (a mailbox with no other domain) stays: AD needs its primary.
    kind, address, primary = split_proxy(raw)
    return kind == "smtp" and not primary and is_moera(address)


def _recipient_type(cloud_type: Any, ad_number: Any) -> int | None:
    """AD's msExchRecipientTypeDetails for the cloud's RecipientTypeDetails. AD's own number is kept when it
    already means that type (sync maps it the same way); None when the cloud's type has no remote form."""
    if ad_number is not None and RECIPIENT_TYPES.get(ad_number) == cloud_type:
        return ad_number
    return _REMOTE_TYPE.get(cloud_type)


def desired_ad_values(mailbox: Mapping[str, Any], ad_now: Mapping[str, Any]) -> dict[str, Any]:
    """LDAP name -> value that AD must hold so that the next sync leaves ``mailbox`` (a Get-Mailbox object) as it is.

    ``ad_now`` is AD's current entry as DirectoryClient.read_exchange_attributes returns it. Attributes that
    Get-Mailbox does not show are left out (AD keeps them).
    """
    desired: dict[str, Any] = {}
    for attribute in EXCHANGE_ATTRIBUTES:
        if attribute.exo in AD_ONLY or attribute.exo not in mailbox:
            continue
        value = mailbox[attribute.exo]
        if attribute.kind is Kind.PROXY:
            value = [address for address in value or [] if not _secondary_moera(address)]
        elif attribute.exo == "RecipientTypeDetails":
            value = _recipient_type(value, ad_now.get(attribute.ad))
            if value is None:
                continue
        elif attribute.multi_valued:
            value = list(value or [])
        elif attribute.kind is Kind.BOOLEAN:
            value = bool(value)
        else:
            value = value or None
        desired[attribute.ad] = value
    return desired


def copy_cloud_to_ad(directory: DirectoryClient, ad_guid, mailbox: Mapping[str, Any]) -> Copy:
    """Write ``mailbox``'s Exchange attributes into the AD user ``ad_guid``, read them back and compare with the
    cloud. Safe to repeat: a second call finds nothing to write. Raises RevertNotVerified naming what differs,
    or the directory client's errors (DirectoryRetryable when worth trying again)."""
    current = directory.read_exchange_attributes(ad_guid)
    desired = desired_ad_values(mailbox, current)
    # The read-back below is the verification, by the drift rules the rest of the portal uses; apply_desired's
    # own verifying re-read would only read the same entry once more.
    observed, changes = directory.apply_desired(ad_guid, desired, verify=False)
    read_back = ad_values(directory.read_exchange_attributes(ad_guid))
    differing = drifted_attributes(exo_values(mailbox), read_back)
    if differing:
        raise RevertNotVerified(
            f"AD still differs from Exchange Online after the copy in: {', '.join(differing)}; the authority was "
            "left in the cloud."
        )
    written = {name: observed.get(name) for name in changes}
    exchange_names = {attribute.exo for attribute in EXCHANGE_ATTRIBUTES}
    return Copy(
        before=written,
        after={name: desired[name] for name in changes},
        ad_values={name: value for name, value in read_back.items() if name in exchange_names},
        exo_values=exo_values(mailbox),
    )
