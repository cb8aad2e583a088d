"""The read cmdlets (Get-Mailbox, Get-AcceptedDomain, Get-OrganizationConfig), parameter binding and paging.
Set-OrganizationConfig is in organization.py, Set-Mailbox in set_mailbox.py.

Paging follows exchange-facts §4.3: the page size comes from ``Prefer: odata.maxpagesize=N``; when more
items remain the response carries ``@odata.nextLink``, to which the client POSTs the *same body*. The
link's ``$skiptoken`` remembers the last item served (keyset paging in creation order, so concurrent
writes neither repeat nor skip existing items) and a hash of the body, which a different body fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .config import Settings, Tenant
from .errors import AMBIGUOUS, ExchangeError, bad_parameter, not_found
from .faults import Faults
from .filters import compile_filter
from .mailboxes import MAILBOX_TYPES, SERVER, to_api
from .state import Meta, TenantState
from .web import Request

MORE_RESULTS = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)
_PREFER = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.I)


@dataclass
class Invocation:
    """One InvokeCommand call: the cmdlet, its parameters and the HTTP request they came in."""

    cmdlet: str
    params: dict[str, Any]
    request: Request
    tenant_in_path: str


@dataclass
class Result:
    value: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    next_link: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def bind(params: dict[str, Any], allowed: tuple[str, ...] | set[str]) -> dict[str, Any]:
    """Match parameter names case-insensitively to the cmdlet's; OData annotations (``X@odata.type``) are skipped."""
    canonical = {name.lower(): name for name in allowed}
    bound: dict[str, Any] = {}
    for key, value in params.items():
        if "@" in key:
            continue
        name = canonical.get(key.lower())
        if name is None:
            raise bad_parameter(f"A parameter cannot be found that matches parameter name '{key}'.")
        bound[name] = value
    return bound


def result_size(value: Any) -> int | None:
    """-ResultSize: a positive number or Unlimited (None)."""
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1:
        raise bad_parameter(
            "Cannot process argument transformation on parameter 'ResultSize'. "
            f'Cannot convert value "{value}" to type "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]". '
            'Use a positive number or "Unlimited".'
        )
    return number


class Cmdlets:
    """The cmdlets the product uses, against one tenant's state."""

    def __init__(
        self, *, state: TenantState, tenant: Tenant, settings: Settings, faults: Faults, base_url: str
    ) -> None:
        self.state, self.tenant, self.settings, self.faults, self.base_url = state, tenant, settings, faults, base_url

    # -- finding mailboxes ---------------------------------------------------------------------------

    def visible(self, meta: Meta, *, lookup: bool = False) -> bool:
        """False while the replication-lag fault hides a freshly created mailbox, or (``lookup``: an Identity
        lookup) one a cmdlet wrote moments ago (fault replication_lag_after_write)."""
        config = self.faults.config
        if not config.replication_lag:
            return True
        latest = max(meta.created, meta.written) if lookup and config.replication_lag_after_write else meta.created
        return latest <= time.time() - config.replication_lag

    def resolve(self, identity: Any) -> dict[str, Any]:
        """The one mailbox an Identity designates (UPN, alias, name, GUIDs, DN or any proxy address)."""
        if not isinstance(identity, str) or not identity.strip():
            raise bad_parameter("Cannot bind argument to parameter 'Identity' because it is null or an empty string.")
        with self.state.lock:
            guids = [guid for guid in self.state.resolve(identity) if self.visible(self.state.meta(guid), lookup=True)]
            if not guids:
                raise not_found(identity, SERVER)
            if len(guids) > 1:
                raise ExchangeError(
                    400,
                    AMBIGUOUS,
                    f"The operation couldn't be performed because '{identity}' matches multiple entries.",
                )
            return self.state.get(guids[0])

    # -- Get-Mailbox ---------------------------------------------------------------------------------

    def get_mailbox(self, call: Invocation) -> Result:
        p = bind(call.params, ("Identity", "Filter", "ResultSize", "RecipientTypeDetails"))
        predicate = None
        if "Filter" in p:
            predicate = compile_filter(
                p["Filter"],
                filterable=lambda name: name != "IsExchangeCloudManaged" or self.settings.filter_cloud_managed,
            )
        types = self._recipient_types(p.get("RecipientTypeDetails"))
        limit = result_size(p["ResultSize"]) if "ResultSize" in p else self.settings.default_result_size
        select = self._select(call.request)

        def wanted(record: dict[str, Any]) -> bool:
            return (predicate is None or predicate(record)) and (not types or record["RecipientTypeDetails"] in types)

        if "Identity" in p:
            record = self.resolve(p["Identity"])
            shown = to_api(record, select, tenant_domain=self.tenant.initial_domain)
            return Result([shown] if wanted(record) else [])
        return self._page(call, wanted, limit, select)

    @staticmethod
    def _recipient_types(value: Any) -> set[str]:
        if value is None:
            return set()
        items = value if isinstance(value, list) else str(value).split(",")
        chosen = set()
        for item in items:
            name = next((t for t in MAILBOX_TYPES if t.lower() == str(item).strip().lower()), None)
            if name is None:
                raise bad_parameter(
                    f"Cannot process argument transformation on parameter 'RecipientTypeDetails'. Cannot convert value "
                    f'"{item}" to type "Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails".'
                )
            chosen.add(name)
        return chosen

    @staticmethod
    def _select(request: Request) -> set[str] | None:
        text = request.query.get("$select")
        return {part.strip() for part in text.split(",") if part.strip()} if text else None

    def _page_size(self, request: Request) -> tuple[int, bool]:
        match = _PREFER.search(request.headers.get("prefer", ""))
        if match and int(match.group(1)) > 0:
            return min(int(match.group(1)), self.settings.max_page_size), True
        return self.settings.default_page_size, False

    def _page(self, call: Invocation, wanted, limit: int | None, select: set[str] | None) -> Result:
        page_size, preferred = self._page_size(call.request)
        body_hash = hashlib.sha256(json.dumps(call.request.json(), sort_keys=True).encode()).hexdigest()[:16]
        after, served = 0, 0
        token = call.request.query.get("$skiptoken")
        if token is not None:
            try:
                position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                after, served, token_hash = int(position["a"]), int(position["n"]), position["h"]
            except (ValueError, KeyError, TypeError):
                raise bad_parameter("The skip token is not valid.", "Microsoft.OData.ODataException") from None
            if token_hash != body_hash:
                raise bad_parameter(
                    "The request body differs from the one the skip token was issued for: post the same body to "
                    "@odata.nextLink.",
                    "Microsoft.OData.ODataException",
                )
        take = page_size if limit is None else min(page_size, limit - served)
        items: list[dict[str, Any]] = []
        more = False
        last = after
        with self.state.lock:
            for record, meta in self.state.records(after):
                if not self.visible(meta) or not wanted(record):
                    continue
                if len(items) >= take:
                    more = True
                    break
                items.append(record)
                last = meta.seq
        served += len(items)
        domain = self.tenant.initial_domain
        result = Result([to_api(record, select, tenant_domain=domain) for record in items])
        if preferred:
            result.headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
        if more and limit is not None and served >= limit:
            result.warnings.append(MORE_RESULTS)
        elif more:
            skip = base64.urlsafe_b64encode(json.dumps({"a": last, "n": served, "h": body_hash}).encode()).decode()
            query = {k: v for k, v in call.request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = skip.rstrip("=")
            result.next_link = f"{self.base_url}{call.request.path}?{urlencode(query)}"
        return result

    # -- tenant-wide configuration -------------------------------------------------------------------

    def get_accepted_domain(self, call: Invocation) -> Result:
        p = bind(call.params, ("Identity",))
        domains = self.tenant.accepted_domains()
        if "Identity" in p:
            wanted = str(p["Identity"]).lower()
            domains = [d for d in domains if wanted in (d["Name"].lower(), d["DomainName"].lower(), d["Guid"])]
            if not domains:
                raise not_found(str(p["Identity"]), SERVER)
        return Result([_annotate_guid(d) for d in domains])

    def get_organization_config(self, call: Invocation) -> Result:
        bind(call.params, ("Identity",))
        organization = {
            "Name": self.tenant.initial_domain,
            "DisplayName": self.tenant.label.capitalize(),
            "Identity": self.tenant.initial_domain,
            "Guid": str(uuid.uuid5(uuid.UUID(self.tenant.tenant_id), "organization")),
            "ExchangeObjectId": str(uuid.uuid5(uuid.UUID(self.tenant.tenant_id), "organization")),
            "OrganizationId": f"{self.tenant.initial_domain} - {self.tenant.initial_domain}",
            "IsDehydrated": False,
            "IsMailboxForcedReplicationEnabled": False,
            # Reported by one third party as the read-back of the tenant default (exchange-facts §1.4): UNCONFIRMED.
            # Set-OrganizationConfig switches it (organization.py).
            "BlockExchangeProvisioningFromOnPremEnabled": self.state.cloud_managed_by_default,
        }
        return Result([_annotate_guid(organization)])


def _annotate_guid(item: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in item.items():
        if key in ("Guid", "ExchangeObjectId"):
            shown[f"{key}@odata.type"] = "#Guid"
        shown[key] = value
    return shown
