"""Keys, certificates, secrets and ids of the emulated tenant, kept in the emulator's workdir.

Generated on the first start and reused on later starts with the same workdir, so a portal configured
against one run (CA file, client secret, certificate, tenant id) keeps working after a restart, as it
would against the real tenant. Only the TLS server certificate (cheap, EC) and the admin token are
made afresh on every start.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MANAGE_AS_APP = "Exchange.ManageAsApp"
# Graph's least-privileged application permission to list users (Learn: "List users", permissions table).
USER_READ_ALL = "User.Read.All"
ORGANIZATION_READ_ALL = "Organization.Read.All"  # Graph's organization (the readiness page's last sync time)
TENANT_FILE = "tenant.json"

# Client registrations every emulator has: the two ways the product authenticates (granted Exchange.ManageAsApp on
# Exchange and User.Read.All on Graph), and one app that exists in the tenant but was granted neither.
CLIENT_KINDS = ("secret", "certificate", "no_permission")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE headers (x5t, x5t#S256) and JWKS use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    *,
    subject: str,
    public_key,
    issuer_name: x509.Name | None = None,
    issuer_key,
    days: int,
    ca: bool = False,
    server_names: tuple[str, ...] = (),
) -> x509.Certificate:
    now = _now()
    issuer_name = issuer_name or _name(subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    if server_names:
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    """(SHA-1 hex, SHA-256 hex) of a certificate, upper case as the Entra portal shows them."""
    return cert.fingerprint(hashes.SHA1()).hex().upper(), cert.fingerprint(hashes.SHA256()).hex().upper()  # noqa: S303


@dataclass
class ClientRegistration:
    """An app registration of the emulated tenant."""

    kind: str
    client_id: str
    display_name: str
    roles: list[str]  # application permissions on Exchange Online
    object_id: str  # of the service principal; the "oid" of app-only tokens
    secret: str | None = None
    secret_file: Path | None = None
    certificate: x509.Certificate | None = None
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    redirect_uris: list[str] = field(default_factory=list)  # empty: any loopback URL
    graph_roles: list[str] = field(default_factory=list)  # application permissions on Microsoft Graph

    @property
    def x5t(self) -> str | None:
        return b64url(self.certificate.fingerprint(hashes.SHA1())) if self.certificate else None  # noqa: S303

    @property
    def x5t_s256(self) -> str | None:
        return b64url(self.certificate.fingerprint(hashes.SHA256())) if self.certificate else None

    def describe(self) -> dict:
        """This client's entry in ready.json."""
        info: dict = {
            "client_id": self.client_id,
            "display_name": self.display_name,
            "roles": self.roles,
            "graph_roles": self.graph_roles,
        }
        if self.secret_file:
            info["client_secret_file"] = str(self.secret_file)
        if self.certificate is not None:
            sha1, sha256 = thumbprints(self.certificate)
            info |= {
                "private_key_file": str(self.private_key_file),
                "certificate_file": str(self.certificate_file),
                "thumbprint": sha1,
                "thumbprint_sha256": sha256,
            }
        return info


@dataclass
class Materials:
    """Everything secret or random about one emulated tenant."""

    workdir: Path
    tenant_id: str
    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    signing_key: rsa.RSAPrivateKey
    signing_cert: x509.Certificate
    clients: dict[str, ClientRegistration]
    admin_token: str
    admin_token_file: Path

    @property
    def kid(self) -> str:
        """Key id of the token-signing key: its certificate's x5t, as Entra does it."""
        return b64url(self.signing_cert.fingerprint(hashes.SHA1()))  # noqa: S303

    def client(self, client_id: str) -> ClientRegistration | None:
        for registration in self.clients.values():
            if registration.client_id == client_id:
                return registration
        return None


def _ensure_key(path: Path, make) -> object:
    if path.exists():
        return _load_key(path)
    key = make()
    write_private(path, _pem_key(key))
    return key


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ensure_cert(path: Path, make) -> x509.Certificate:
    if path.exists():
        return x509.load_pem_x509_certificate(path.read_bytes())
    cert = make()
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def _secret_value() -> str:
    # Entra client secrets look like "xyz8Q~...": 40 characters with a "~" in them.
    return secrets.token_urlsafe(27)[:3] + "8Q~" + secrets.token_urlsafe(30)[:34]


def prepare(workdir: Path) -> Materials:
    """Create (or load) the tenant's keys, certificates and app registrations under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    tenant_path = workdir / TENANT_FILE
    if tenant_path.exists():
        tenant = json.loads(tenant_path.read_text(encoding="utf-8"))
    else:
        tenant = {
            "tenant_id": str(uuid.uuid4()),
            "clients": {
                kind: {"client_id": str(uuid.uuid4()), "object_id": str(uuid.uuid4())} for kind in CLIENT_KINDS
            },
        }
        write_atomic(tenant_path, json.dumps(tenant, indent=2).encode())

    # TLS: a CA the clients trust through a CA file, and a server certificate for the loopback names.
    ca_key = _ensure_key(workdir / "ca.key", lambda: ec.generate_private_key(ec.SECP256R1()))
    ca_cert = _ensure_cert(
        workdir / "ca.crt",
        lambda: _certificate(
            subject="SOA Portal sandbox Exchange Online CA",
            public_key=ca_key.public_key(),
            issuer_key=ca_key,
            days=3650,
            ca=True,
        ),
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(
        subject="127.0.0.1",
        public_key=server_key.public_key(),
        issuer_name=ca_cert.subject,
        issuer_key=ca_key,
        days=365,
        server_names=("127.0.0.1", "localhost", "::1"),
    )
    write_private(workdir / "server.key", _pem_key(server_key))
    (workdir / "server.crt").write_bytes(
        server_cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )

    # Token signing: RSA, with a self-signed certificate published in the JWKS (x5c), like Entra's keys.
    signing_key = _ensure_key(workdir / "signing.key", _rsa)
    signing_cert = _ensure_cert(
        workdir / "signing.crt",
        lambda: _certificate(
            subject="accounts.sandbox.invalid", public_key=signing_key.public_key(), issuer_key=signing_key, days=3650
        ),
    )

    clients: dict[str, ClientRegistration] = {}
    for kind in CLIENT_KINDS:
        ids = tenant["clients"][kind]
        roles = [] if kind == "no_permission" else [MANAGE_AS_APP]
        names = {"secret": "SOA Portal (secret)", "certificate": "SOA Portal (certificate)"}
        registration = ClientRegistration(
            kind=kind,
            client_id=ids["client_id"],
            object_id=ids["object_id"],
            display_name=names.get(kind, "Unconsented app"),
            roles=roles,
            graph_roles=[] if kind == "no_permission" else [USER_READ_ALL, ORGANIZATION_READ_ALL],
        )
        if kind == "certificate":
            key_path, cert_path = workdir / "client.key", workdir / "client.crt"
            client_key = _ensure_key(key_path, _rsa)
            registration.certificate = _ensure_cert(
                cert_path,
                lambda key=client_key: _certificate(
                    subject="SOA Portal app-only", public_key=key.public_key(), issuer_key=key, days=365
                ),
            )
            registration.private_key_file, registration.certificate_file = key_path, cert_path
        else:
            secret_path = workdir / f"client-{kind.replace('_', '-')}.secret"
            if not secret_path.exists():
                write_private(secret_path, _secret_value().encode())
            registration.secret = secret_path.read_text(encoding="utf-8").strip()
            registration.secret_file = secret_path
        clients[kind] = registration

    admin_token = secrets.token_urlsafe(32)
    admin_token_file = workdir / "admin-token"
    write_private(admin_token_file, admin_token.encode())
    return Materials(
        workdir=workdir,
        tenant_id=tenant["tenant_id"],
        ca_file=workdir / "ca.crt",
        server_cert_file=workdir / "server.crt",
        server_key_file=workdir / "server.key",
        signing_key=signing_key,
        signing_cert=signing_cert,
        clients=clients,
        admin_token=admin_token,
        admin_token_file=admin_token_file,
    )


def constant_time_equal(given: str, expected: str) -> bool:
    """Compare secrets without leaking their common prefix length through timing."""
    return secrets.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())
