"""What the emulator is started with (Options) and what tests may change while it runs (Settings).

Every behaviour the reference marks UNCONFIRMED, or that the emulator had to guess, is a Setting, so a
test or a later finding can switch it without a code change.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MAIL_DOMAIN = "corp.example.com"
# sandbox.directory's generator gives a fifth of its users a secondary address in this legacy domain;
# a real tenant would have it verified, or Entra would have dropped those addresses.
EXTRA_ACCEPTED_DOMAINS = ("example.org",)
EXCHANGE_RESOURCE = "https://outlook.office365.com"
# Other names Entra accepts for the same resource in a scope.
EXCHANGE_RESOURCE_ALIASES = ("https://outlook.office.com", "00000002-0000-0ff1-ce00-000000000000")
GRAPH_RESOURCE = "00000003-0000-0000-c000-000000000000"
# Graph's application ID URI: the audience of the v1 access tokens Entra issues for a .default Graph scope.
GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_RESOURCE_ALIASES = (GRAPH_AUDIENCE, GRAPH_RESOURCE, "https://graph.microsoft.com/")
# Entra Connect's sourceAnchor attribute (exchange-facts §8): mS-DS-ConsistencyGuid since Connect 1.1.524 (falling
# back to objectGUID while it is empty), objectGUID on older installs.
SOURCE_ANCHORS = ("mS-DS-ConsistencyGuid", "objectGUID")
# What Exchange does when a full EmailAddresses list leaves out the MOERA or the .mail.onmicrosoft.com address.
PROTECTED_ADDRESS_MODES = ("keep", "refuse", "off")

_GROUP_NAMESPACE = uuid.UUID("5b0d3c52-6d3a-4a52-9a0e-2f1d4b7f3c11")


@dataclass
class Settings:
    """Behaviour switches that tests may change at run time through the admin endpoint."""

    # Access token lifetime in seconds (Entra's default for app-only tokens is 60-90 minutes).
    token_lifetime: int = 3600
    # Seconds an address removed from a mailbox stays reserved before another mailbox may take it.
    proxy_cooldown: float = 0.0
    # Whether Get-Mailbox -Filter accepts IsExchangeCloudManaged. UNCONFIRMED (exchange-facts §1.4, open
    # question 5): when False the property is refused as not filterable.
    filter_cloud_managed: bool = True
    # Items Get-Mailbox returns without -ResultSize (PowerShell's default is 1000); None: no limit.
    default_result_size: int | None = 1000
    # Page size without a Prefer: odata.maxpagesize header.
    default_page_size: int = 1000
    # Largest page a client may ask for.
    max_page_size: int = 1000
    # What an unknown cmdlet answers: "nul-gzip" is what was measured on EXO (403, NUL bytes labelled gzip,
    # exchange-facts §4.4), "json" is a readable 403 in the usual error shape.
    unknown_cmdlet_body: str = "nul-gzip"
    # Entra adds the MOERA (alias@<tenant>.onmicrosoft.com) to every synced mailbox.
    add_moera: bool = True
    # The AD attribute Entra Connect anchors users on (SOURCE_ANCHORS). Graph shows it base64-encoded as
    # onPremisesImmutableId; the sync joins AD users to cloud objects on it. Get-Mailbox does not show it.
    source_anchor: str = "mS-DS-ConsistencyGuid"
    # Entra Connect's optional "Exchange hybrid" writeback: each tick writes User_<object id> into the AD user's
    # msDS-ExternalDirectoryObjectID over LDAP when it differs (exchange-facts §6, §8). Off unless chosen, as in
    # Connect's wizard; the demo turns it on.
    hybrid_writeback: bool = False
    # A full-list EmailAddresses write that leaves out the MOERA or a .mail.onmicrosoft.com address: "keep" puts
    # them back (guess), "refuse" fails the call with a 400, "off" drops them as asked.
    protected_addresses: str = "keep"
    # Most group ids an ID token carries in its groups claim: past it the token holds the overage indication
    # (_claim_names/_claim_sources) instead and the client reads the groups from Graph. Entra's limit for JWTs is
    # 200 (Learn, "How to get the signed-in user group list when a group overage claim is displayed").
    groups_overage_limit: int = 200
    # The Entra roles of the product's app registrations (app_roles.py): empty, every cmdlet is refused with 403;
    # without Exchange Administrator (or Hybrid Identity / Global Administrator) Set-Mailbox -IsExchangeCloudManaged is.
    app_directory_roles: list[str] = field(default_factory=lambda: ["Exchange Administrator"])

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (validated by type) or raise ValueError naming the bad key."""
        known = {f.name: f for f in dataclasses.fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            current = getattr(self, key)
            if key == "default_result_size" and value is not None:
                value = int(value)
            elif key == "unknown_cmdlet_body" and value not in ("nul-gzip", "json"):
                raise ValueError("unknown_cmdlet_body must be 'nul-gzip' or 'json'")
            elif key == "source_anchor" and value not in SOURCE_ANCHORS:
                raise ValueError(f"source_anchor must be one of {', '.join(SOURCE_ANCHORS)}")
            elif key == "protected_addresses" and value not in PROTECTED_ADDRESS_MODES:
                raise ValueError(f"protected_addresses must be one of {', '.join(PROTECTED_ADDRESS_MODES)}")
            elif key == "app_directory_roles":
                if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
                    raise ValueError("app_directory_roles must be a list of role names")
                value = list(value)
            elif isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
            elif isinstance(current, int | float) and current is not None:
                value = type(current)(value)
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LdapSource:
    """Where Entra Connect (the sync tick) reads the directory."""

    url: str
    bind_dn: str
    password_file: Path
    base_dn: str

    @property
    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()


@dataclass
class Options:
    """How one emulator process is started (the command-line flags)."""

    workdir: Path
    port: int = 0
    ldap: LdapSource | None = None
    rate: float | None = 1000.0  # requests per second per client id; None: no throttling
    burst: int = 30000  # bucket size, and the Rate-Limit-Limit header (the figure EXO shows)
    sync_interval: float = 0.0  # seconds between sync ticks; 0: only when asked through the admin endpoint
    state_file: Path | None = None
    seed_file: Path | None = None
    identities_file: Path | None = None
    mail_domain: str | None = None  # default: the directory's DNS domain, else corp.example.com
    accepted_domains: list[str] = field(default_factory=lambda: list(EXTRA_ACCEPTED_DOMAINS))
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class Tenant:
    """Names of the emulated tenant, derived from the mail domain of the directory it syncs."""

    tenant_id: str
    mail_domain: str
    accepted: tuple[str, ...]

    # Cached: a sync tick asks for them a few times per user.
    @functools.cached_property
    def label(self) -> str:
        return self.mail_domain.split(".")[0]

    @functools.cached_property
    def initial_domain(self) -> str:
        return f"{self.label}.onmicrosoft.com"

    @property
    def routing_domain(self) -> str:
        return f"{self.label}.mail.onmicrosoft.com"

    def accepted_domains(self) -> list[dict[str, Any]]:
        """Get-AcceptedDomain's view: the default mail domain, the initial and coexistence domains, extras."""
        names = [self.mail_domain, self.initial_domain, self.routing_domain, *self.accepted]
        seen: list[str] = []
        for name in names:
            if name.lower() not in (s.lower() for s in seen):
                seen.append(name)
        return [
            {
                "Name": name,
                "Identity": name,
                "DomainName": name,
                "DomainType": "Authoritative",
                "Default": name == self.mail_domain,
                "InitialDomain": name == self.initial_domain,
                "IsCoexistenceDomain": name == self.routing_domain,
                "MatchSubDomains": False,
                "AddressBookEnabled": True,
                "Guid": str(uuid.uuid5(uuid.UUID(self.tenant_id), f"accepted-domain:{name.lower()}")),
            }
            for name in seen
        ]

    def is_accepted(self, domain: str) -> bool:
        return domain.lower() in {d["DomainName"].lower() for d in self.accepted_domains()}

    def matches(self, tenant_in_path: str) -> bool:
        """InvokeCommand and the Entra routes take the tenant GUID or the initial domain."""
        return tenant_in_path.lower() in (self.tenant_id.lower(), self.initial_domain.lower())


def group_id(name: str) -> str:
    """A stable object id for a demo security group, as the groups claim carries ids, not names."""
    return str(uuid.uuid5(_GROUP_NAMESPACE, name))


DEMO_GROUPS = ("SOA Admins", "SOA Help Desk", "SOA Wave Operators", "SOA Approvers", "SOA Auditors", "All Staff")


def default_identities(mail_domain: str) -> list[dict[str, Any]]:
    """Demo people for the sign-in page, one per portal role, and one whose only group gives no role."""
    people = (
        ("admin", "Alex Admin", "SOA Admins"),
        ("helpdesk", "Hana Helpdesk", "SOA Help Desk"),
        ("operator", "Omar Operator", "SOA Wave Operators"),
        ("approver", "Anna Approver", "SOA Approvers"),
        ("auditor", "Aude Auditor", "SOA Auditors"),
        ("visitor", "Vera Visitor", "All Staff"),
    )
    return [
        {
            "oid": str(uuid.uuid5(_GROUP_NAMESPACE, f"person:{login}")),
            "preferred_username": f"{login}@{mail_domain}",
            "name": name,
            "groups": [group_id(group)],
        }
        for login, name, group in people
    ]


def load_identities(path: Path | None, mail_domain: str) -> list[dict[str, Any]]:
    """Identities offered on the sign-in page: a JSON list of {oid, preferred_username, name, groups}."""
    if path is None:
        return default_identities(mail_domain)
    identities = json.loads(path.read_text(encoding="utf-8"))
    for person in identities:
        missing = {"oid", "preferred_username", "name"} - person.keys()
        if missing:
            raise ValueError(f"identity {person!r} lacks {', '.join(sorted(missing))}")
        person.setdefault("groups", [])
    return identities
