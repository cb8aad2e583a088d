"""The Entra roles held by the product's app registrations, and what Exchange refuses for want of them.

App-only access to Exchange Online needs the ``Exchange.ManageAsApp`` permission **and** a role: an Entra role on
the service principal (Exchange Administrator, Exchange Recipient Administrator, ...) or an Exchange role group;
without one the call is refused with 401/403 (exchange-facts §4.1, §4.4). Changing ``IsExchangeCloudManaged``
needs Exchange Administrator since GA; Microsoft also names Hybrid Identity Administrator and Global Administrator
(§1.5). Whether a narrower role may change it is UNCONFIRMED (open question 4): here it is refused, which is in
GUESSES, with the error's wording.

The roles are the setting ``app_directory_roles`` (config.Settings), so a test removes the app's role at run time.
"""

from __future__ import annotations

from typing import Any

from .errors import UNAUTHORIZED, ExchangeError

# The roles §1.5 says may change IsExchangeCloudManaged.
CLOUD_MANAGED_ROLES = frozenset({"Exchange Administrator", "Hybrid Identity Administrator", "Global Administrator"})


def check_app_role(roles: list[str], cmdlet: str, params: dict[str, Any], appid: str) -> None:
    """Raise Exchange's 403 when the app's roles do not allow ``cmdlet`` with ``params``."""
    if not roles:
        raise ExchangeError(
            403,
            UNAUTHORIZED,
            f"The application '{appid}' holds no Exchange role: assign it an Entra role such as Exchange "
            "Administrator, or add its service principal to an Exchange role group.",
            message="Access denied",
        )
    setting_flag = cmdlet.lower() == "set-mailbox" and any(k.lower() == "isexchangecloudmanaged" for k in params)
    if setting_flag and not CLOUD_MANAGED_ROLES & set(roles):
        raise ExchangeError(
            403,
            UNAUTHORIZED,
            f"The application '{appid}' is not allowed to set the parameter IsExchangeCloudManaged: its roles "
            f"({', '.join(sorted(roles))}) do not include Exchange Administrator.",
            message="Access denied",
        )
