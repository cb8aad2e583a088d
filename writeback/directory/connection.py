"""Connections to Active Directory: settings, TLS, the bind, and the reachability probe behind /healthz.

``connect()`` builds every connection, so TLS, timeouts and the secret handling live in one place:

- ``ldaps://`` URLs use LDAPS, ``ldap://`` with a CA file uses StartTLS; both verify the server certificate
  (against the CA file, else the system store) and its host name. Plain ``ldap://`` without a CA file is for
  the sandbox: a simple bind over it sends the password in clear, so to any host but this machine it is refused
  unless DJANGO_DEBUG or LDAP_ALLOW_CLEARTEXT says otherwise (``cleartext_refusal``; deploy check writeback.E002).
- The password is read from the password file at every connect (a rotated file takes effect on the next
  reconnect) and is never logged or put into an error message.
- AD's referrals are not followed: that would bind to other hosts with the service account's credentials.
"""

import contextlib
import ipaddress
import logging
import math
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import ldap3
from django.conf import settings
from django.core import checks
from ldap3.core.exceptions import LDAPException

from writeback.directory.errors import DirectoryError, DirectoryPermanent, error_for_exception, error_for_result

logger = logging.getLogger(__name__)


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
        raise DirectoryPermanent("LDAP_PASSWORD_FILE is not set.")
    try:
        return Path(path).read_text().rstrip("\n")
    except OSError as exc:
        raise DirectoryPermanent(f"Cannot read the LDAP password file {path}: {exc.strerror}.") from None


def _accept_as_given(_value) -> bool:
    return True


# With the schema loaded, ldap3 runs a GUID attribute's filter value through its uuid validator, which returns
# the 16 raw bytes, and then unescapes those bytes once more as if they were filter text: a GUID holding a
# backslash (0x5c) followed by two hex-digit characters (the bytes of "\94", say) is sent as another value and
# matches nothing. Accepting the escaped text as given leaves the single unescaping to ldap3's filter encoder.
# Keyed by OID, which ldap3 consults whatever letter case a filter uses for the name.
_VALIDATORS = {
    "1.2.840.113556.1.4.2": _accept_as_given,  # objectGUID
    "1.2.840.113556.1.4.1360": _accept_as_given,  # mS-DS-ConsistencyGuid
}


def _server(config: DirectoryConfig, get_info: str) -> tuple[ldap3.Server, bool]:
    """The ldap3 Server for the URL, and whether StartTLS is needed after connecting."""
    if not config.url:
        raise DirectoryPermanent("LDAP_URL is not set.")
    scheme = urlsplit(config.url).scheme.lower()
    if scheme not in ("ldap", "ldaps"):
        raise DirectoryPermanent(f"LDAP_URL must start with ldap:// or ldaps://, not {config.url!r}.")
    refusal = cleartext_refusal(config.url, config.ca_file)
    if refusal:
        raise DirectoryPermanent(refusal)
    tls = None
    if scheme == "ldaps" or config.ca_file:
        try:
            # ldap3 turns off the context's own host name check and makes its own against the certificate.
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file or None)
        except LDAPException as exc:
            raise DirectoryPermanent(f"The LDAP CA file {config.ca_file} cannot be used: {exc}") from None
    # ldap3 packs timeouts into socket options as whole seconds.
    timeout = max(1, math.ceil(config.timeout))
    server = ldap3.Server(
        config.url, use_ssl=scheme == "ldaps", tls=tls, connect_timeout=timeout, get_info=get_info,
        validator=_VALIDATORS,
    )  # fmt: skip
    return server, scheme == "ldap" and tls is not None


# What a server said of itself (root DSE and schema, as ldap3 parsed them), by where it is: a later connection to it
# binds without reading them again (about 18 ms of CPU each time on the sandbox's slapd), and a work horse forked
# from a worker that read them inherits them (writeback.jobs.clients.directory_schema_read). Only this is shared:
# an ldap3 Server also carries the state of its addresses (one marked unavailable after a failed connect), so each
# connection still gets a Server of its own. A schema changed on the server is seen by processes started after the
# change; the portal reads it only to check attribute names and to tell AD from other servers.
_SCHEMA_READ: dict[tuple[str, str, float], tuple[object, object]] = {}


def connect(config: DirectoryConfig, *, get_info: str = ldap3.NONE) -> ldap3.Connection:
    """Open and bind a connection; raise DirectoryRetryable/DirectoryPermanent with the server's reason.

    ``get_info=ldap3.SCHEMA`` reads the server schema after the bind, which lets ldap3 check attribute names
    and type values (the client wants it; the health probe does not need the extra round trip); once per server
    and process (``_SCHEMA_READ``).
    """
    server, start_tls = _server(config, get_info)
    where = (config.url, config.ca_file, config.timeout)
    known = _SCHEMA_READ.get(where) if get_info == ldap3.SCHEMA else None
    if known is not None:
        server._dsa_info, server._schema_info = known  # noqa: SLF001 - ldap3 has no public setter for what it read
    connection = ldap3.Connection(
        server,
        user=config.bind_dn,
        password=_read_password(config.password_file),
        receive_timeout=max(1, math.ceil(config.timeout)),
        raise_exceptions=False,
        # AD answers searches from the domain root with referrals to other partitions; following them would
        # bind to other hosts with our credentials.
        auto_referrals=False,
    )
    operation = "connect"
    try:
        # The schema is read after the bind, not before it as well (AD lets no anonymous client read it).
        connection.open(read_server_info=False)
        if start_tls:
            operation = "StartTLS"
            if not connection.start_tls():
                raise error_for_result(connection.result, operation=operation, target=config.url)
        elif server.ssl is False and not _is_loopback(server.host):
            logger.warning("Binding to %s over plain LDAP: the password crosses the network unencrypted.", config.url)
        operation = "bind"
        if not connection.bind(read_server_info=known is None):
            raise error_for_result(connection.result, operation=operation, target=f"as {config.bind_dn}")
        if get_info == ldap3.SCHEMA and known is None and server.schema is not None:
            _SCHEMA_READ[where] = (server.info, server.schema)
    except LDAPException as exc:
        close_quietly(connection)
        raise error_for_exception(exc, operation=operation, target=config.url, url=config.url) from None
    except DirectoryError:
        close_quietly(connection)
        raise
    return connection


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def cleartext_refusal(url: str, ca_file: str, *, allow: bool | None = None) -> str:
    """Why binding to ``url`` is refused (the password would cross the network in clear), or "" when it is not.

    Plain ldap:// without a CA file (so without StartTLS) is allowed only to this machine, or when
    LDAP_ALLOW_CLEARTEXT (or DJANGO_DEBUG, for a development directory elsewhere) says so; ``allow`` overrides both.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "ldap" or ca_file:
        return ""
    if allow is None:
        allow = settings.LDAP_ALLOW_CLEARTEXT or settings.DEBUG
    if allow or _is_loopback(parts.hostname or ""):
        return ""
    return (
        f"LDAP_URL {url} is plain LDAP to another host: the service account's password would cross the network "
        "unencrypted, so the portal refuses to bind. Use ldaps://, or set LDAP_CA_FILE for StartTLS; "
        "LDAP_ALLOW_CLEARTEXT=true allows it anyway, for a directory on a network you trust."
    )


def check_cleartext_bind(app_configs: object = None, **kwargs: object) -> list[checks.Error]:
    """Deploy check (``manage.py check --deploy``): the configured directory is not bound to in clear."""
    problem = cleartext_refusal(settings.LDAP_URL, settings.LDAP_CA_FILE, allow=settings.LDAP_ALLOW_CLEARTEXT)
    if not problem:
        return []
    hint = "Use ldaps:// or StartTLS (LDAP_CA_FILE), or set LDAP_ALLOW_CLEARTEXT=true if the network is trusted."
    return [checks.Error(problem, hint=hint, id="writeback.E002")]


def close_quietly(connection: ldap3.Connection) -> None:
    with contextlib.suppress(LDAPException):  # already broken: the socket is gone either way
        connection.unbind()


def ping(config: DirectoryConfig) -> None:
    """Bind and read the base entry; raise DirectoryError when the directory is not usable."""
    connection = connect(config)
    try:
        found = connection.search(config.base_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["1.1"])
        if not found:
            raise error_for_result(connection.result, operation="read of the base DN", target=config.base_dn)
    except LDAPException as exc:
        raise error_for_exception(exc, operation="ping", target=config.base_dn, url=config.url) from None
    finally:
        close_quietly(connection)
