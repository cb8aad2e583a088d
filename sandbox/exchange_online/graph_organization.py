"""Graph's ``GET /v1.0/organization``: the tenant, with the on-premises sync properties Entra Connect keeps.

Follows Learn "organization resource type" and "List organization" (v1.0): the answer is a collection holding the
tenant's one organization; ``onPremisesSyncEnabled`` is true while the tenant is synced from an on-premises
directory (false once no longer synced, null if never), ``onPremisesLastSyncDateTime`` is when the tenant was last
synced, ISO 8601 in UTC. The application permission Organization.Read.All (least privileged; Directory.Read.All,
Organization.ReadWrite.All and Directory.ReadWrite.All also do) is needed, else 403 Authorization_RequestDenied.

Here the last sync is the end of the emulator's last Entra Connect tick (sync.py), and sync is enabled once a tick
has run. A test moves either through ``PUT /_emulator/organization`` (the next tick moves the time on again).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .config import Tenant

READ_ORGANIZATION = frozenset(
    {"Organization.Read.All", "Organization.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
)
PROPERTIES = (
    "id", "displayName", "tenantType", "countryLetterCode", "createdDateTime", "onPremisesSyncEnabled",
    "onPremisesLastSyncDateTime", "verifiedDomains",
)  # fmt: skip


class Organization:
    """The tenant's organization object; its sync properties follow the sync ticks unless a test set them."""

    def __init__(self, tenant: Tenant, sync: Any) -> None:
        self.tenant, self.sync = tenant, sync
        self.sync_enabled: bool | None = None  # None: derived from the ticks

    def clear(self) -> None:
        self.sync_enabled = None

    def update(self, body: dict[str, Any]) -> None:
        """The admin endpoint's override of ``onPremisesLastSyncDateTime`` (ISO 8601 or null) and
        ``onPremisesSyncEnabled``."""
        unknown = set(body) - {"onPremisesLastSyncDateTime", "onPremisesSyncEnabled"}
        if unknown:
            raise ValueError(f"unknown organization properties: {', '.join(sorted(unknown))}")
        if "onPremisesLastSyncDateTime" in body:
            value = body["onPremisesLastSyncDateTime"]
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
            if when is not None and when.tzinfo is None:
                raise ValueError("onPremisesLastSyncDateTime needs a time zone")
            self.sync.last_tick_at = when
        if "onPremisesSyncEnabled" in body:
            value = body["onPremisesSyncEnabled"]
            if value is not None and not isinstance(value, bool):
                raise ValueError("onPremisesSyncEnabled must be true, false or null")
            self.sync_enabled = value

    def record(self) -> dict[str, Any]:
        last = self.sync.last_tick_at
        enabled = self.sync_enabled if self.sync_enabled is not None else (True if last is not None else None)
        return {
            "id": self.tenant.tenant_id,
            "displayName": self.tenant.label.capitalize(),
            "tenantType": "AAD",
            "countryLetterCode": "US",
            "createdDateTime": "2015-01-01T00:00:00Z",
            "onPremisesSyncEnabled": enabled,
            "onPremisesLastSyncDateTime": last.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if last else None,
            "verifiedDomains": [
                {"name": d["DomainName"], "type": "Managed", "isDefault": d["Default"],
                 "isInitial": d["InitialDomain"], "capabilities": "Email"}
                for d in self.tenant.accepted_domains()
            ],
        }  # fmt: skip

    def listing(self, base_url: str, select: list[str]) -> dict[str, Any]:
        record = self.record()
        shown = select or list(PROPERTIES)
        context = f"{base_url}/v1.0/$metadata#organization" + (f"({','.join(select)})" if select else "")
        return {"@odata.context": context, "value": [{name: record.get(name) for name in shown}]}

    @staticmethod
    def select(text: str | None) -> list[str]:
        """``$select`` names (case-insensitive), or ValueError naming the unknown one."""
        if text is None:
            return []
        canonical = {name.lower(): name for name in PROPERTIES}
        chosen = []
        for part in text.split(","):
            name = canonical.get(part.strip().lower())
            if name is None:
                raise ValueError(part.strip())
            if name not in chosen:
                chosen.append(name)
        return chosen
