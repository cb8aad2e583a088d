"""The administrator's "Test connection": bind, read the root DSE and one user, and say what was found or what failed.

``directory_connection_test`` does the network work outside any transaction, then records the test and its result
in the audit log (``writeback.directory.connection_tested``) in a short one. The report holds nothing secret: the
password file's content is never read into it, and the server's answers are identities and counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction

from portal.audit import audit_record
from portal.roles import Action, may
from writeback.directory.client import AD_USER_FILTER, DirectoryClient
from writeback.directory.connection import DirectoryConfig
from writeback.directory.errors import DirectoryError

USER_ATTRIBUTES = ("userPrincipalName", "displayName", "mail", "msExchRecipientTypeDetails")


class ConnectionTestRefused(Exception):
    """The user may not test the connections."""


@dataclass
class DirectoryReport:
    """What one connection test found. ``error`` is set (and ``ok`` False) when a step failed; ``step`` says which."""

    url: str
    bind_dn: str
    base_dn: str
    transport: str
    ok: bool = False
    step: str = ""
    error: str = ""
    server: str = ""
    dns_host_name: str = ""
    mark_name: str = ""
    mark: str = ""
    naming_contexts: list[str] = field(default_factory=list)
    default_naming_context: str = ""
    user_dn: str = ""
    user: dict[str, str] = field(default_factory=dict)

    def audit(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in ("", [], {})}


def _transport(config: DirectoryConfig) -> str:
    scheme = urlsplit(config.url).scheme.lower()
    if scheme == "ldaps":
        return "LDAPS (TLS from the first byte)"
    if scheme == "ldap" and config.ca_file:
        return "StartTLS"
    return "plain LDAP (no TLS: the password crosses the network in clear unless the host is this machine)"


def _first(values: dict[str, list[str]], name: str) -> str:
    return (values.get(name.lower()) or [""])[0]


def probe(config: DirectoryConfig) -> DirectoryReport:
    """Bind, read the root DSE and one user below the base DN with the given configuration."""
    report = DirectoryReport(url=config.url, bind_dn=config.bind_dn, base_dn=config.base_dn, transport="")
    directory = DirectoryClient(config)
    try:
        report.transport = _transport(config)
        report.step = "connect and bind"
        dse = directory.root_dse()  # the first request opens and binds the connection
        report.step = "read the root DSE"
        report.server = directory.server_identity(dse)
        report.dns_host_name = _first(dse, "dnsHostName")
        report.naming_contexts = dse.get("namingcontexts", [])
        report.default_naming_context = _first(dse, "defaultNamingContext")
        report.mark_name = directory.change_mark_name()
        report.mark = directory.change_mark() or ""
        report.step = f"read one user below {config.base_dn}"
        user = next(iter(directory.paged_search(config.base_dn, AD_USER_FILTER, USER_ATTRIBUTES, page_size=1)), None)
        if user is None:
            report.error = (
                f"No user with an Exchange recipient type was found below {config.base_dn}: check LDAP_BASE_DN, and "
                "that the service account may read the users."
            )
            return report
        report.user_dn = user["dn"]
        raw = {name.lower(): values for name, values in user["raw_attributes"].items()}
        # The first value as the server sent it: OpenLDAP's mail is multi-valued where AD's is single-valued.
        report.user = {name: (raw.get(name.lower()) or [b""])[0].decode("utf-8", "replace") for name in USER_ATTRIBUTES}
        report.ok, report.step = True, ""
    except DirectoryError as exc:
        report.error = str(exc)
    finally:
        directory.close()
    return report


def directory_connection_test(*, actor, config: DirectoryConfig | None = None) -> DirectoryReport:
    """Test the directory connection for an administrator and audit the test with its result."""
    if not may(actor, Action.PORTAL_CONFIGURE):
        raise ConnectionTestRefused("Only an administrator can test the connections.")
    report = probe(config or DirectoryConfig.from_settings())
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="writeback.directory.connection_tested",
            object_type="directory",
            object_id=report.url,
            object_repr=f"Directory {report.url}",
            after={"result": "ok" if report.ok else "failed", **report.audit()},
            reason=report.error,
        )
    return report
