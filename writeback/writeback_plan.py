"""What a writeback task writes into AD, what counts as drift there, and whether AD took the write: pure functions.

The task's ``desired`` values are the cloud's, keyed by Exchange Online property name (as ``Mailbox.exo_values``).
Only the attributes this installation writes back are written (soa.attributes.writeback_attributes: Microsoft's 24,
plus msExchHideFromAddressLists when WRITEBACK_HIDE_FROM_ADDRESS_LISTS is on); identity attributes never are. The
MOERA (alias@<tenant>.onmicrosoft.com) is never written either: Exchange Online adds it to every mailbox by itself
and AD does not hold it, so it is left out of proxyAddresses and out of ``mail``, and a MOERA that AD does hold
(someone put it there) is left where it is: neither the portal's to add nor its to delete.

Values are converted to AD's form by the revert's own conversion (writeback.wave_revert.desired_ad_values), and
compared by the drift rules (soa.values.same_value), so "differs" means here what it means on the mailbox page.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from soa.attributes import EXCHANGE_ATTRIBUTES, Kind, MappedAttribute, by_ad_name, writeback_attributes
from soa.values import AD_ONLY, ad_values, is_moera, same_value, split_proxy
from writeback.wave_revert import desired_ad_values

EXCHANGE_NAMES = frozenset(attribute.exo for attribute in EXCHANGE_ATTRIBUTES)


def _is_moera_proxy(raw: str) -> bool:
    kind, address, _primary = split_proxy(raw)
    return kind == "smtp" and is_moera(address)


def written_back(desired: Mapping[str, Any]) -> list[MappedAttribute]:
    """The attributes of ``desired`` (Exchange names) that this installation writes into AD, in map order."""
    return [a for a in writeback_attributes() if a.exo in desired and a.exo not in AD_ONLY and not a.identity]


def ad_desired(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """LDAP name -> value AD must hold for the written-back attributes of ``desired``, given AD's entry as read
    (``observed``, as DirectoryClient reads it): the MOERA neither added nor removed, a MOERA ``mail`` not written."""
    cloud = {attribute.exo: desired[attribute.exo] for attribute in written_back(desired)}
    wanted = desired_ad_values(cloud, observed)
    if "proxyAddresses" in wanted:
        kept = [raw for raw in observed.get("proxyAddresses") or [] if _is_moera_proxy(raw)]
        wanted["proxyAddresses"] = [raw for raw in wanted["proxyAddresses"] if not _is_moera_proxy(raw)] + kept
    if isinstance(wanted.get("mail"), str) and is_moera(wanted["mail"]):
        del wanted["mail"]
    return wanted


@dataclass(frozen=True)
class Finding:
    """One attribute edited in AD behind the portal's back (Exchange name; values as the portal stores them)."""

    attribute: str
    ad_value: Any
    last_known: Any
    cloud_value: Any


def drift_findings(
    *,
    planned: Iterable[str],
    observed: Mapping[str, Any],
    last_known: Mapping[str, Any],
    cloud: Mapping[str, Any],
    portal_wrote: Iterable[Mapping[str, Any]] = (),
) -> list[Finding]:
    """The attributes among ``planned`` (LDAP names) whose value in AD (``observed``, as read before the write) the
    portal did not write and that differs from what the portal last knew of AD (``last_known``, Exchange names:
    ``Mailbox.ad_values``) and from the cloud (``cloud``, the task's desired values).

    ``portal_wrote`` are the desired values of the mailbox's earlier writebacks that may have reached AD without
    the portal recording it (a worker killed after its modify): AD holding one of them is the portal's own doing.
    Nothing is drift for an attribute the portal has never read from AD (no last known value to differ from).
    """
    attributes = [by_ad_name(name) for name in planned]
    found_now = ad_values(observed, attributes)
    earlier = list(portal_wrote)
    findings = []
    for attribute in attributes:
        if attribute.exo not in last_known:
            continue
        found = found_now.get(attribute.exo)
        known = last_known[attribute.exo]
        wanted = cloud.get(attribute.exo)
        if same_value(attribute, wanted, found) or same_value(attribute, known, found):
            continue
        if any(attribute.exo in prior and same_value(attribute, prior[attribute.exo], found) for prior in earlier):
            continue
        findings.append(Finding(attribute.exo, _plain(found), _plain(known), _plain(wanted)))
    return findings


def not_taken(*, planned: Iterable[str], read_back: Mapping[str, Any], cloud: Mapping[str, Any]) -> list[str]:
    """Exchange names of the planned attributes (LDAP names) that AD, read back after the write, does not hold as
    the cloud does, by the drift rules (the MOERA and a MOERA ``mail`` aside, as they were not written)."""
    attributes = [by_ad_name(name) for name in planned]
    back = ad_values(read_back, attributes)
    differing = []
    for attribute in attributes:
        wanted = cloud.get(attribute.exo)
        if attribute.kind is not Kind.PROXY and isinstance(wanted, str) and is_moera(wanted):
            continue
        if not same_value(attribute, wanted, back.get(attribute.exo)):
            differing.append(attribute.exo)
    return differing


def ad_side(read_back: Mapping[str, Any]) -> dict[str, Any]:
    """AD's Exchange attributes as read back, keyed by Exchange name, for ``Mailbox.ad_values``."""
    return ad_values(read_back, EXCHANGE_ATTRIBUTES)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
