"""Entra ID, enough of it for msal to work unmodified: discovery, JWKS, token endpoint, sign-in page.

Routes below ``/{tenant}`` (tenant GUID or initial domain):

- ``GET  v2.0/.well-known/openid-configuration`` and ``GET discovery/v2.0/keys``
- ``POST oauth2/v2.0/token``: client credentials (secret, or a certificate assertion verified against the
  registered certificate: RS256 + ``x5t`` or PS256 + ``x5t#S256``), authorization code with PKCE, refresh
- ``GET/POST oauth2/v2.0/authorize``: a page listing the demo identities; picking one redirects back with
  a code. ``GET oauth2/v2.0/logout``.

App-only access tokens are v1-shaped like Entra's tokens for Exchange (``aud``
``https://outlook.office365.com``, ``appid``, ``roles``), signed RS256 with the key in the JWKS. A
``https://graph.microsoft.com/.default`` scope gets a token for Graph (``aud`` ``https://graph.microsoft.com``)
whose ``roles`` are the app's Graph permissions (User.Read.All for the product's apps), as Entra puts in a token
only the app roles granted on the token's resource.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from .config import (
    EXCHANGE_RESOURCE,
    EXCHANGE_RESOURCE_ALIASES,
    GRAPH_AUDIENCE,
    GRAPH_RESOURCE_ALIASES,
    Settings,
    Tenant,
)
from .errors import OAuthError
from .faults import Faults
from .materials import ClientRegistration, Materials, b64url, constant_time_equal
from .signin import DELEGATED_EXCHANGE_SCOPE, OIDC_SCOPES, Grant, SignIn
from .web import Request, Response, json_response

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = 300  # Entra tolerates five minutes of clock skew in client assertions
__all__ = ["DELEGATED_EXCHANGE_SCOPE", "Entra", "TokenRejected"]


class TokenRejected(Exception):
    """An access token presented to the Exchange API is not valid; the text goes into WWW-Authenticate."""


class Entra(SignIn):
    """The tenant's identity provider."""

    def __init__(
        self,
        *,
        materials: Materials,
        tenant: Tenant,
        settings: Settings,
        identities: list[dict[str, Any]],
        base_url: str,
        faults: Faults | None = None,
    ) -> None:
        self.materials, self.tenant, self.settings, self.identities = materials, tenant, settings, identities
        self.faults = faults
        self.base_url = base_url
        self.tenant_id = materials.tenant_id
        self.authority = f"{base_url}/{self.tenant_id}"
        # Entra's v1 access tokens name sts.windows.net as issuer, not the login host; keeping that makes the
        # issuer independent of the emulator's port, so tokens survive a restart on another port.
        self.issuer_v1 = f"https://sts.windows.net/{self.tenant_id}/"
        self.issuer_v2 = f"{self.authority}/v2.0"
        self.token_endpoint = f"{self.authority}/oauth2/v2.0/token"
        self._public_key = materials.signing_key.public_key()
        self._lock = threading.Lock()
        self._codes: dict[str, Grant] = {}
        self._redeemed: set[str] = set()
        self._refresh: dict[str, Grant] = {}
        self._verified: dict[str, dict[str, Any]] = {}
        self._issued_utis: list[str] = []  # every access token's uti, for revoke_issued_tokens
        self._revoked_utis: set[str] = set()
        self.tokens_issued = 0

    # -- discovery -----------------------------------------------------------------------------------

    def openid_configuration(self) -> Response:
        a = self.authority
        return json_response(
            200,
            {
                "token_endpoint": f"{a}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{a}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": self.issuer_v2,
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{a}/oauth2/v2.0/authorize",
                "end_session_endpoint": f"{a}/oauth2/v2.0/logout",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "code_challenge_methods_supported": ["S256", "plain"],
                "claims_supported": [
                    "sub",
                    "iss",
                    "aud",
                    "exp",
                    "iat",
                    "nbf",
                    "auth_time",
                    "nonce",
                    "name",
                    "preferred_username",
                    "oid",
                    "tid",
                    "ver",
                    "groups",
                    "email",
                ],  # fmt: skip
                "tenant_region_scope": "EU",
            },
        )

    def jwks(self) -> Response:
        numbers = self._public_key.public_numbers()
        der = self.materials.signing_cert.public_bytes(serialization.Encoding.DER)

        def as_b64url(number: int) -> str:
            return b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))

        key = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.materials.kid,
            "x5t": self.materials.kid,
            "n": as_b64url(numbers.n),
            "e": as_b64url(numbers.e),
            "x5c": [base64.b64encode(der).decode("ascii")],
            "issuer": self.issuer_v2,
        }
        return json_response(200, {"keys": [key]})

    # -- token endpoint ------------------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        correlation_id = request.headers.get("client-request-id")
        try:
            form = request.form()
            payload = self._token(form, request.headers)
        except OAuthError as exc:
            return json_response(exc.status, exc.body(base_url=self.base_url, correlation_id=correlation_id))
        with self._lock:
            self.tokens_issued += 1
        return json_response(200, payload, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def _token(self, form: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'."
            )
        client, method = self._authenticate(form, headers)
        if grant_type == "client_credentials":
            return self._client_credentials(client, method, form)
        if grant_type == "authorization_code":
            return self._authorization_code(client, form)
        if grant_type == "refresh_token":
            return self._refresh_token(client, form)
        raise OAuthError(
            400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
        )

    def _authenticate(self, form: dict[str, str], headers: dict[str, str]) -> tuple[ClientRegistration, str]:
        basic_id = basic_secret = None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                basic_id, _, basic_secret = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            except ValueError:
                raise OAuthError(401, "invalid_client", 7000218, "The Authorization header is malformed.") from None
        client_id = form.get("client_id") or basic_id
        if not client_id:
            raise OAuthError(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'."
            )
        client = self.materials.client(client_id)
        if client is None:
            raise OAuthError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant.initial_domain}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may have sent your "
                "authentication request to the wrong tenant.",
            )
        secret = form.get("client_secret") or basic_secret
        if secret is not None:
            if client.secret is None or not constant_time_equal(secret, client.secret):
                raise OAuthError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                    f"value, not the client secret ID, for a secret added to app '{client_id}'.",
                )
            return client, "secret"
        assertion = form.get("client_assertion")
        if assertion is None:
            raise OAuthError(
                401, "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )  # fmt: skip
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError(
                400, "invalid_request", 900144,
                f"The request body must contain the following parameter: 'client_assertion_type' = '{ASSERTION_TYPE}'.",
            )  # fmt: skip
        self._verify_assertion(client, assertion)
        return client, "certificate"

    def _verify_assertion(self, client: ClientRegistration, assertion: str) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise OAuthError(401, "invalid_client", 50027, "JWT token is invalid or malformed.") from None
        # msal pads the base64url thumbprints ("...="); Entra accepts both forms.
        sha256 = str(header.get("x5t#S256") or "").rstrip("=")
        sha1 = str(header.get("x5t") or "").rstrip("=")
        used = sha256 or sha1
        registered = client.certificate
        if registered is None:
            matches = False
        elif sha256:
            matches = sha256 == client.x5t_s256
        elif sha1:
            matches = sha1 == client.x5t
        else:
            matches = bool(header.get("x5c")) and self._x5c_matches(header["x5c"], registered)
        if not matches:
            raise OAuthError(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not registered on application. "
                f"[Reason - The key was not found., Thumbprint of key used by client: '{_hex_thumbprint(used)}', "
                f"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for "
                f"app Id '{client.client_id}'.]",
            )
        algorithm = header.get("alg")
        if algorithm not in ("RS256", "PS256"):
            raise OAuthError(
                401,
                "invalid_client",
                5002738,
                f"Invalid JWT token. '{algorithm}' is not a supported signature algorithm.",
            )
        audiences = [self.token_endpoint, f"{self.base_url}/{self.tenant.initial_domain}/oauth2/v2.0/token"]
        try:
            claims = jwt.decode(
                assertion,
                key=registered.public_key(),
                algorithms=[algorithm],
                audience=audiences,
                leeway=CLOCK_SKEW,
                options={"require": ["aud", "iss", "exp"]},
            )
        except jwt.InvalidSignatureError:
            raise OAuthError(
                401, "invalid_client", 700027,
                "Client assertion contains an invalid signature. [Reason - The provided signature value did not match "
                f"the expected signature value., Thumbprint of key used by client: '{_hex_thumbprint(used)}']",
            ) from None  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise OAuthError(
                401, "invalid_client", 700024, "Client assertion is not within its valid time range."
            ) from None
        except jwt.InvalidAudienceError:
            raise OAuthError(
                401, "invalid_client", 50027,
                f"JWT token is invalid or malformed. [Reason - The audience claim must be '{self.token_endpoint}'.]",
            ) from None  # fmt: skip
        except jwt.PyJWTError as exc:
            raise OAuthError(
                401, "invalid_client", 50027, f"JWT token is invalid or malformed. [Reason - {exc}]"
            ) from None
        if claims.get("iss") != client.client_id or claims.get("sub", client.client_id) != client.client_id:
            raise OAuthError(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )

    @staticmethod
    def _x5c_matches(chain: list[str], registered) -> bool:
        try:
            return base64.b64decode(chain[0]) == registered.public_bytes(serialization.Encoding.DER)
        except (ValueError, IndexError, TypeError):
            return False

    def _client_credentials(self, client: ClientRegistration, method: str, form: dict[str, str]) -> dict[str, Any]:
        scopes = form.get("scope", "").split()
        resources = [s for s in scopes if s not in OIDC_SCOPES]
        if not resources:
            raise OAuthError(
                400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'."
            )
        if len(resources) > 1 or not resources[0].endswith("/.default"):
            raise OAuthError(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {' '.join(resources)} is not valid. Client credential flows must have a "
                "scope value with /.default suffixed to the resource identifier (application ID URI).",
            )  # fmt: skip
        audience = self._audience(resources[0].removesuffix("/.default"))
        lifetime = int(self.settings.token_lifetime)
        token = self.app_token(client, method=method, lifetime=lifetime, audience=audience)
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

    def app_token(
        self,
        client: ClientRegistration,
        *,
        method: str = "secret",
        lifetime: int,
        audience: str = EXCHANGE_RESOURCE,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """An app-only access token as Entra issues it to ``client`` (``extra`` claims override)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": self.issuer_v1,
            "iat": now,
            "nbf": min(now, now + lifetime),
            "exp": now + lifetime,
            "app_displayname": client.display_name,
            "appid": client.client_id,
            "appidacr": "2" if method == "certificate" else "1",
            "idp": self.issuer_v1,
            "idtyp": "app",
            "oid": client.object_id,
            "sub": client.object_id,
            "tid": self.tenant_id,
            "uti": b64url(secrets.token_bytes(16)),
            "ver": "1.0",
        }
        roles = client.graph_roles if audience == GRAPH_AUDIENCE else client.roles
        if roles:
            claims["roles"] = list(roles)
        claims.update(extra or {})
        with self._lock:
            self._issued_utis.append(claims["uti"])
        return self.sign(claims)

    def clear_revocations(self) -> None:
        with self._lock:
            self._revoked_utis.clear()

    def revoke_issued_tokens(self) -> int:
        """Refuse every access token issued so far (tokens issued afterwards are good): what a client sees when
        its cached token is revoked before it expires. Returns how many were revoked."""
        with self._lock:
            self._revoked_utis.update(self._issued_utis)
            self._issued_utis.clear()
            return len(self._revoked_utis)

    def _audience(self, resource: str) -> str:
        if resource.rstrip("/") in (EXCHANGE_RESOURCE, *EXCHANGE_RESOURCE_ALIASES):
            return EXCHANGE_RESOURCE
        if resource.rstrip("/") in GRAPH_RESOURCE_ALIASES:
            return GRAPH_AUDIENCE
        raise OAuthError(
            400, "invalid_resource", 500011,
            f"The resource principal named {resource} was not found in the tenant named {self.tenant.initial_domain}. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant.",
        )  # fmt: skip

    def sign(self, claims: dict[str, Any]) -> str:
        """Sign claims with the tenant's key (RS256, kid and x5t = the JWKS key)."""
        headers = {"typ": "JWT", "x5t": self.materials.kid, "kid": self.materials.kid}
        return jwt.encode(claims, self.materials.signing_key, algorithm="RS256", headers=headers)

    # -- checking tokens presented to Exchange -------------------------------------------------------

    def verify_access_token(self, token: str, *, audience: str = EXCHANGE_RESOURCE) -> dict[str, Any]:
        """The claims of a valid access token for ``audience`` issued by this tenant, or TokenRejected."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.get("aud") != audience:
                raise TokenRejected("The access token is invalid: Invalid audience.")
            if cached["exp"] <= time.time():
                raise TokenRejected("The access token has expired.")
            if cached.get("uti") in self._revoked_utis:
                raise TokenRejected("The access token has been revoked.")
            return cached
        try:
            claims = jwt.decode(
                token,
                key=self._public_key,
                algorithms=["RS256"],
                audience=audience,
                issuer=self.issuer_v1,
                options={"require": ["exp", "iat", "aud", "iss", "tid"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("The access token has expired.") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"The access token is invalid: {exc}.") from None
        if claims["tid"] != self.tenant_id:
            raise TokenRejected("The access token was issued for another tenant.")
        if claims.get("uti") in self._revoked_utis:
            raise TokenRejected("The access token has been revoked.")
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[token] = claims
        return claims


def _hex_thumbprint(x5t: str) -> str:
    try:
        return base64.urlsafe_b64decode(x5t + "=" * (-len(x5t) % 4)).hex().upper()
    except ValueError:
        return x5t
