"""Active Directory over LDAP (ldap3): connection settings and the reachability probe.

The full directory client (paged search, GUID lookup, minimal modifies, error mapping) grows here; every
connection is built by ``connect()`` so TLS, timeouts and the secret handling stay in one place.
"""

import math
import ssl
from dataclasses import dataclass
from pathlib import Path

import ldap3
from django.conf import settings
from ldap3.core.exceptions import LDAPException


class DirectoryError(Exception):
    """The directory could not be reached or refused the request; the message says why."""


@dataclass(frozen=True)
class DirectoryConfig:
    """Where and as whom to connect. The password is read from a file at connect time, never stored here."""

    url: str
    bind_dn: str
    password_file: str
    base_dn: str
    ca_file: str = ""
    timeout: float = 5.0

    @classmethod
    def from_settings(cls) -> "DirectoryConfig":
        return cls(
            url=settings.LDAP_URL,
            bind_dn=settings.LDAP_BIND_DN,
            password_file=settings.LDAP_PASSWORD_FILE,
            base_dn=settings.LDAP_BASE_DN,
            ca_file=settings.LDAP_CA_FILE,
            timeout=settings.LDAP_TIMEOUT_SECONDS,
        )


def _read_password(path: str) -> str:
    if not path:
        raise DirectoryError("LDAP_PASSWORD_FILE is not set.")
    try:
        return Path(path).read_text().rstrip("\n")
    except OSError as exc:
        raise DirectoryError(f"Cannot read the LDAP password file {path}: {exc.strerror}.") from None


def connect(config: DirectoryConfig) -> ldap3.Connection:
    """Open and bind a connection; raise DirectoryError with the server's reason when that fails."""
    if not config.url:
        raise DirectoryError("LDAP_URL is not set.")
    # ldap3 packs timeouts into socket options as whole seconds.
    timeout = max(1, math.ceil(config.timeout))
    tls = None
    if config.ca_file:
        tls = ldap3.Tls(ca_certs_file=config.ca_file, validate=ssl.CERT_REQUIRED)
    server = ldap3.Server(config.url, connect_timeout=timeout, tls=tls, get_info=ldap3.NONE)
    connection = ldap3.Connection(
        server,
        user=config.bind_dn,
        password=_read_password(config.password_file),
        receive_timeout=timeout,
        raise_exceptions=False,
    )
    try:
        if config.ca_file and config.url.startswith("ldap://"):
            connection.open()
            connection.start_tls()
        if not connection.bind():
            raise DirectoryError(f"Bind as {config.bind_dn} failed: {connection.result.get('description')}.")
    except LDAPException as exc:
        connection.unbind()
        raise DirectoryError(f"Cannot reach the directory at {config.url}: {exc}") from None
    return connection


def ping(config: DirectoryConfig) -> None:
    """Bind and read the base entry; raise DirectoryError when the directory is not usable."""
    connection = connect(config)
    try:
        found = connection.search(config.base_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"])
        if not found:
            raise DirectoryError(
                f"The base DN {config.base_dn} cannot be read: {connection.result.get('description')}."
            )
    finally:
        connection.unbind()
