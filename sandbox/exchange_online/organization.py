"""The tenant default (exchange-facts §1.9): Set-OrganizationConfig's two switches, and what it does to users synced
while it is on.

- ``Set-OrganizationConfig -ExchangeAttributesCloudManagedByDefault`` switches it on, ``-ExchangeAttributesServer
  ManagedByDefault`` off; both are SwitchParameters (§1.4 [MS S5]). Get-OrganizationConfig shows it as
  ``BlockExchangeProvisioningFromOnPremEnabled``, a name only one third party reports (§1.4, UNCONFIRMED).
- While it is on, a user the sync sees for the first time arrives in Entra ID without Exchange attributes (no mail,
  proxyAddresses or mailNickname, whatever AD holds) and gets no mailbox from AD (§1.9 [MS S1; 3P S21]: a mailbox
  created in AD then does not reach Exchange Online). The sync remembers it (``TenantState.default_users``).
- Once such a user is licensed (the admin endpoint ``POST /_emulator/licenses``, the emulator's stand-in for a license
  assignment), Exchange Online creates its mailbox already cloud-managed: IsDirSynced true, IsExchangeCloudManaged
  true (§1.9 [MS S1]), so the sync never writes AD's Exchange attributes into it.
- Switching it off changes nothing for the users it already affected (§1.9 [3P S21, S27]).
"""

from __future__ import annotations

import base64
from typing import Any

from .cmdlets import Cmdlets, Invocation, Result, bind
from .config import Tenant
from .errors import PARAMETER_BINDING, ExchangeError, bad_parameter
from .mailboxes import from_directory, with_moera
from .state import TenantState

ON = "ExchangeAttributesCloudManagedByDefault"
OFF = "ExchangeAttributesServerManagedByDefault"
READ_BACK = "BlockExchangeProvisioningFromOnPremEnabled"
# What a user arriving under the default does not bring from AD (the Exchange attributes the sync reads).
_EXCHANGE_SINGLE = ("mail", "mailNickname", "msExchHideFromAddressLists", "msExchRecipientTypeDetails",
                    *(f"extensionAttribute{i}" for i in range(1, 16)))  # fmt: skip
_EXCHANGE_MULTI = ("proxyAddresses", *(f"msExchExtensionCustomAttribute{i}" for i in range(1, 6)))


def _switch(value: Any) -> bool:
    """A SwitchParameter's value over REST: present means on; ``false`` (``-Switch:$false``) means not given."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise bad_parameter(f"Cannot convert value '{value}' to type 'System.Management.Automation.SwitchParameter'.")


def set_organization_config(cmdlets: Cmdlets, call: Invocation) -> Result:
    params = bind(call.params, (ON, OFF, "Identity"))
    on, off = _switch(params.get(ON, False)), _switch(params.get(OFF, False))
    if on and off:
        raise bad_parameter(f"Parameter set cannot be resolved using the specified named parameters ({ON}, {OFF}).",
                            PARAMETER_BINDING)  # fmt: skip
    if not on and not off:
        return Result(warnings=[_unchanged(cmdlets.tenant)])
    state = cmdlets.state
    with state.lock:
        if state.cloud_managed_by_default == on:
            return Result(warnings=[_unchanged(cmdlets.tenant)])
        state.cloud_managed_by_default = on
        state.version += 1
    return Result()


def _unchanged(tenant: Tenant) -> str:
    return f"The command completed successfully but no settings of '{tenant.initial_domain}' have been modified."


def stripped(user: dict[str, Any]) -> dict[str, Any]:
    """The AD user as Entra receives it under the default: its Exchange attributes left out (JSON-safe)."""
    kept = {key: value for key, value in user.items() if key not in ("objectGUID", "mS-DS-ConsistencyGuid")}
    for name in _EXCHANGE_SINGLE:
        kept[name] = None
    for name in _EXCHANGE_MULTI:
        kept[name] = []
    kept["msExchHideFromAddressLists"] = False
    kept["objectGUID"] = base64.b64encode(user["objectGUID"]).decode("ascii")
    return kept


def entra_shape(user: dict[str, Any]) -> dict[str, Any]:
    """A remembered (stripped) user with its objectGUID back as bytes, as the sync's functions take it."""
    return {**user, "objectGUID": base64.b64decode(user["objectGUID"]), "mS-DS-ConsistencyGuid": None}


def license_user(state: TenantState, tenant: Tenant, who: str, *, add_moera: bool) -> dict[str, Any]:
    """Give a user that arrived under the default its licence: Exchange creates its mailbox, cloud-managed. ``who`` is
    the user's UPN or its Entra object id (ExternalDirectoryObjectId)."""
    from .mailboxes import directory_ids

    wanted = who.strip().lower()
    with state.lock:
        for anchor, remembered in state.default_users.items():
            user = entra_shape(remembered)
            ids = directory_ids(user["objectGUID"])
            if wanted not in ((user.get("userPrincipalName") or "").lower(), ids["ExternalDirectoryObjectId"]):
                continue
            if state.by_anchor(anchor) is not None or state.get(ids["Guid"]) is not None:
                raise ExchangeError(409, "", f"{who} already has a mailbox.")
            upn = user.get("userPrincipalName") or ""
            record = from_directory({**user, "mailNickname": upn.partition("@")[0]}, tenant, add_moera=False,
                                    anchor=anchor)  # fmt: skip
            addresses = [f"SMTP:{upn}"]
            record.update(
                EmailAddresses=with_moera(addresses, record["Alias"], tenant) if add_moera else addresses,
                PrimarySmtpAddress=upn, WindowsEmailAddress=upn, RecipientTypeDetails="UserMailbox",
                IsExchangeCloudManaged=True,
            )  # fmt: skip
            state.add(record)
            return record
    raise ExchangeError(
        404, "", f"No user synced while the tenant default was on matches {who!r} (only those are modelled here)."
    )


def organization_values(state: TenantState) -> dict[str, Any]:
    """What Get-OrganizationConfig shows of the default."""
    return {READ_BACK: state.cloud_managed_by_default}
