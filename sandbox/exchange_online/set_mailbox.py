"""Set-Mailbox with Exchange's rules (exchange-facts §4.2, §5).

Order of checks, as PowerShell does it: parameter names and value types (binding), then the object
(404), then the write scope, then the values. Nothing is changed unless every check passes. A call that
changes nothing succeeds with the warning "The command completed successfully but no settings of '<obj>'
have been modified." (§4.3), and WhenChangedUTC only moves when something changed.

Write scope: on a dir-synced mailbox whose IsExchangeCloudManaged is false, the Exchange attributes are
AD's, and setting one fails with the error quoted in §5. Flipping IsExchangeCloudManaged itself is
allowed; the flag is judged as it is *before* the call, so a call that flips it and edits an address at
once is refused (guess). Identity attributes (DisplayName, Name) of a dir-synced mailbox are refused the
same way whatever the flag (the exact EXO error is UNCONFIRMED).
"""

from __future__ import annotations

import time
from typing import Any

from . import addresses
from .cmdlets import Cmdlets, Invocation, Result, bind
from .errors import (
    DATA_VALIDATION,
    INVALID_OPERATION,
    NOT_ACCEPTED_DOMAIN,
    PARAMETER_BINDING,
    PROXY_IN_USE,
    RECIPIENT_TASK,
    ExchangeError,
    bad_parameter,
)
from .mailboxes import CUSTOM_ATTRIBUTES, EXTENSION_ATTRIBUTES, exchange_dn, now_utc

HASHTABLE = "#Exchange.GenericHashTable"
EXCHANGE_PARAMETERS = (
    "EmailAddresses", "WindowsEmailAddress", "Alias", "HiddenFromAddressListsEnabled",
    *CUSTOM_ATTRIBUTES, *EXTENSION_ATTRIBUTES,
)  # fmt: skip
IDENTITY_PARAMETERS = ("DisplayName", "Name")
PARAMETERS = ("Identity", "IsExchangeCloudManaged", *EXCHANGE_PARAMETERS, *IDENTITY_PARAMETERS)
CUSTOM_MAX = 1024
EXTENSION_MAX_VALUES = 1300
EXTENSION_VALUE_MAX = 2048  # per-value length is UNCONFIRMED; the sandbox schema's bound
ALIAS_MAX = 64
_ALIAS_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#%*+-/=?^_~.")


def _conversion_error(name: str, value: Any, target: str, extra: str = "") -> ExchangeError:
    return bad_parameter(
        f"Cannot process argument transformation on parameter '{name}'. Cannot convert value \"{value}\" to type "
        f'"{target}".{extra}'
    )


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower().lstrip("$") in ("true", "false"):
        return value.strip().lower().lstrip("$") == "true"
    raise _conversion_error(
        name, value, "System.Boolean",
        " Boolean parameters accept only Boolean values and numbers, such as $True, $False, 1 or 0.",
    )  # fmt: skip


def _strings(name: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str | int | float) and not isinstance(item, bool) for item in items):
        raise _conversion_error(name, value, "Microsoft.Exchange.Data.MultiValuedProperty`1[System.String]")
    return [str(item) for item in items]


def _hashtable(name: str, value: dict[str, Any]) -> dict[str, list[str]]:
    """{"@odata.type": "#Exchange.GenericHashTable", "Add": [..], "Remove": [..]} -> {"add": [..], "remove": [..]}."""
    if value.get("@odata.type") != HASHTABLE:
        raise _conversion_error(
            name, "System.Collections.Hashtable", "Microsoft.Exchange.Data.MultiValuedProperty",
            f' A hashtable needs "@odata.type": "{HASHTABLE}".',
        )  # fmt: skip
    ops: dict[str, list[str]] = {"add": [], "remove": []}
    for key, items in value.items():
        if key == "@odata.type" or key.endswith("@odata.type"):
            continue
        if key.lower() not in ops:
            raise bad_parameter(
                f"The hashtable for parameter '{name}' can only contain the keys Add and Remove, not '{key}'."
            )
        ops[key.lower()] = [] if items is None else _strings(name, items)
    return ops


def _bind_values(params: dict[str, Any]) -> dict[str, Any]:
    """Convert each parameter to its type, as PowerShell's binder would, before looking at the mailbox."""
    converted: dict[str, Any] = {}
    for name, value in params.items():
        if name in ("IsExchangeCloudManaged", "HiddenFromAddressListsEnabled"):
            converted[name] = _boolean(name, value)
        elif name in ("EmailAddresses", *EXTENSION_ATTRIBUTES):
            if isinstance(value, dict):
                converted[name] = _hashtable(name, value)
            else:
                converted[name] = [] if value is None else _strings(name, value)
        elif value is None:
            converted[name] = ""
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            converted[name] = str(value)
        else:
            raise _conversion_error(name, value, "System.String")
    return converted


def write_scope_error(record: dict[str, Any], parameters: list[str]) -> ExchangeError:
    """The error EXO gives for a synced object's attribute (exchange-facts §5), code-less as seen in the field."""
    name = record["Name"]
    return ExchangeError(
        400,
        INVALID_OPERATION,
        f"The operation on mailbox \"{name}\" failed because it's out of the current user's write scope. The action "
        f"'Set-Mailbox', '{', '.join(parameters)}', can't be performed on the object '{name}' because the object is "
        "being synchronized from your on-premises organization. This action should be performed on the object in "
        "your on-premises organization.",
        code="",
    )


def set_mailbox(cmdlets: Cmdlets, call: Invocation) -> Result:
    params = bind(call.params, PARAMETERS)
    if "Identity" not in params:
        raise bad_parameter(
            "Cannot process command because of one or more missing mandatory parameters: Identity.", PARAMETER_BINDING
        )
    identity = params.pop("Identity")
    changes = _bind_values(params)
    state = cmdlets.state
    with state.lock:
        record = cmdlets.resolve(identity)
        if record["IsDirSynced"]:
            blocked = [
                n for n in changes
                if n in IDENTITY_PARAMETERS or (n in EXCHANGE_PARAMETERS and not record["IsExchangeCloudManaged"])
            ]  # fmt: skip
            if blocked:
                raise write_scope_error(record, blocked)
        elif "IsExchangeCloudManaged" in changes:
            # Open question 11 of exchange-facts: the toggle on a cloud-only object. Refused here (guess).
            raise ExchangeError(
                400,
                RECIPIENT_TASK,
                f"IsExchangeCloudManaged can only be set on a mailbox that is synchronized from your on-premises "
                f"organization; '{record['Name']}' is not.",
            )
        updated = _apply(cmdlets, record, changes)
        if updated == record:
            return Result(
                warnings=[
                    f"The command completed successfully but no settings of '{record['Name']}' have been modified."
                ]
            )
        updated["WhenChangedUTC"] = now_utc()
        state.replace(record["Guid"], updated, written=True)
    return Result()


def _apply(cmdlets: Cmdlets, record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    updated = dict(record)
    for name, value in changes.items():
        if name == "EmailAddresses":
            current = updated["EmailAddresses"]
            if isinstance(value, dict):
                new = addresses.modify(current, add=value["add"], remove=value["remove"])
            else:
                new = _keep_protected(cmdlets, current, addresses.full_list(value))
            _check_new_addresses(cmdlets, record, current, new)
            updated["EmailAddresses"] = new
            updated["PrimarySmtpAddress"] = updated["WindowsEmailAddress"] = addresses.primary_of(new)
        elif name in CUSTOM_ATTRIBUTES:
            if len(value) > CUSTOM_MAX:
                raise ExchangeError(
                    400, DATA_VALIDATION,
                    f"The length of the property is too long. The maximum length is {CUSTOM_MAX} and the length of "
                    f"the value provided is {len(value)}.",
                )  # fmt: skip
            updated[name] = value
        elif name in EXTENSION_ATTRIBUTES:
            updated[name] = _extension_values(name, updated[name], value)
        elif name in ("HiddenFromAddressListsEnabled", "IsExchangeCloudManaged"):
            updated[name] = value
        elif name == "Alias":
            updated["Alias"] = _alias(value)
        elif name in IDENTITY_PARAMETERS:
            if not value:
                raise bad_parameter(f"The {name} property can't be empty.", DATA_VALIDATION)
            updated[name] = value
            if name == "Name":
                updated["DistinguishedName"] = exchange_dn(value, cmdlets.tenant)
    if "WindowsEmailAddress" in changes:
        address = changes["WindowsEmailAddress"]
        proxy = addresses.Proxy.parse(address)
        if proxy.prefix is not None or not addresses.is_valid_smtp(address):
            raise addresses.invalid_smtp(address)
        current = updated["EmailAddresses"]
        new = addresses.with_primary(current, address)
        _check_new_addresses(cmdlets, record, record["EmailAddresses"], new)
        updated["EmailAddresses"] = new
        updated["PrimarySmtpAddress"] = updated["WindowsEmailAddress"] = address
    return updated


def _keep_protected(cmdlets: Cmdlets, current: list[str], new: list[str]) -> list[str]:
    """A full EmailAddresses list that leaves out the MOERA (@<tenant>.onmicrosoft.com) or the hybrid routing
    address (@<tenant>.mail.onmicrosoft.com): Entra stamps the MOERA on every synced user and an admin cannot
    change it on a synced one; the routing address is what hybrid mail flow and moves rely on. Whether Exchange
    puts them back or refuses the call is not documented: setting protected_addresses ("keep", "refuse", "off")."""
    mode = cmdlets.settings.protected_addresses
    if mode == "off":
        return new
    protected = {cmdlets.tenant.initial_domain.lower(), cmdlets.tenant.routing_domain.lower()}
    kept = {addresses.key_of(v) for v in new}
    missing = [
        proxy
        for proxy in map(addresses.Proxy.parse, current)
        if proxy.is_smtp and proxy.domain in protected and proxy.key not in kept
    ]
    if not missing:
        return new
    if mode == "refuse":
        raise ExchangeError(
            400,
            DATA_VALIDATION,
            f'The email address "{missing[0].address}" can\'t be removed: addresses in the domains '
            f"{' and '.join(sorted(protected))} are managed by Microsoft 365.",
        )
    return [*new, *(f"smtp:{proxy.address}" for proxy in missing)]


def _check_new_addresses(cmdlets: Cmdlets, record: dict[str, Any], old: list[str], new: list[str]) -> None:
    """Addresses this call adds: accepted domain, and not used (or recently released) by another mailbox."""
    old_keys = {addresses.key_of(v) for v in old}
    now = time.time()
    cooldown = cmdlets.settings.proxy_cooldown
    for value in new:
        proxy = addresses.Proxy.parse(value)
        if proxy.key in old_keys:
            continue
        if proxy.is_smtp and not cmdlets.tenant.is_accepted(proxy.domain):
            raise ExchangeError(
                400,
                NOT_ACCEPTED_DOMAIN,
                f'The SMTP address "{proxy.address}" uses the domain "{proxy.domain}", which isn\'t an accepted domain '
                "for your organization.",
            )
        holders = cmdlets.state.proxy_holders(proxy.key) - {record["Guid"]}
        released = cmdlets.state.released(proxy.key)
        cooling = released is not None and released[0] != record["Guid"] and now - released[1] < cooldown
        if holders or cooling:
            raise ExchangeError(
                400,
                PROXY_IN_USE,
                f'The proxy address "{value}" is already being used by the proxy addresses or LegacyExchangeDN. '
                "Please choose another proxy address.",
            )


def _extension_values(name: str, current: list[str], value: Any) -> list[str]:
    if isinstance(value, dict):
        removed = {v.lower() for v in value["remove"]}
        result = [v for v in current if v.lower() not in removed]
        for item in value["add"]:
            if item.lower() not in {v.lower() for v in result}:
                result.append(item)
    else:
        result = []
        for item in value:
            if item.lower() in {v.lower() for v in result}:
                raise ExchangeError(400, DATA_VALIDATION, f'The value "{item}" is already present in {name}.')
            result.append(item)
    if len(result) > EXTENSION_MAX_VALUES:
        raise ExchangeError(
            400, DATA_VALIDATION,
            f"{name} can hold up to {EXTENSION_MAX_VALUES} values; this change would leave {len(result)}.",
        )  # fmt: skip
    for item in result:
        if len(item) > EXTENSION_VALUE_MAX:
            raise ExchangeError(
                400, DATA_VALIDATION,
                f"The length of the property is too long. The maximum length is {EXTENSION_VALUE_MAX} and the length "
                f"of the value provided is {len(item)}.",
            )  # fmt: skip
    return result


def _alias(value: str) -> str:
    """Alias rules of exchange-facts §5: at most 64 characters, a limited set, no leading/trailing/double periods."""
    extended = all(ch in _ALIAS_CHARS or "\u00a1" <= ch <= "\u00ff" for ch in value)
    if (
        not value
        or len(value) > ALIAS_MAX
        or not extended
        or value.startswith(".")
        or value.endswith(".")
        or ".." in value
    ):
        raise ExchangeError(
            400,
            DATA_VALIDATION,
            f'The alias "{value}" isn\'t valid. An alias can have up to {ALIAS_MAX} letters, digits and the characters '
            "! # % * + - / = ? ^ _ ~, with periods only between other characters.",
        )
    return value
