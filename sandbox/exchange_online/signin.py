"""User sign-in for the portal: the authorize page, the authorization code grant with PKCE, refresh tokens.

The authorize page lists the configured demo identities (oid, preferred_username, name, groups); picking
one sends the browser back to the (loopback) redirect URI with a code, in the response mode asked for. The
code is single use, bound to the client, the redirect URI and the PKCE challenge (S256 or plain). The
id_token is RS256-signed by the tenant key with oid, preferred_username, name, groups, nonce, aud = client id.
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .config import EXCHANGE_RESOURCE, GRAPH_RESOURCE, Settings, Tenant
from .errors import OAuthError
from .faults import Faults
from .materials import ClientRegistration, Materials, b64url
from .web import Request, Response, html_response, is_loopback_url, redirect

OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
CODE_LIFETIME = 600
REFRESH_LIFETIME = 90 * 86400
DELEGATED_EXCHANGE_SCOPE = "AdminApi.AccessAsUser.All"
_EXPIRED = (
    "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive "
    "authorization request for this user and resource."
)


@dataclass
class Grant:
    """What an authorization code or refresh token stands for."""

    client_id: str
    identity: dict[str, Any]
    scopes: list[str]
    expires: float
    redirect_uri: str = ""
    nonce: str | None = None
    challenge: str | None = None
    challenge_method: str = "plain"


class SignIn:
    """The interactive half of Entra; mixed into :class:`entra.Entra`, whose state and keys it uses."""

    # Provided by Entra.
    materials: Materials
    tenant: Tenant
    settings: Settings
    identities: list[dict[str, Any]]
    tenant_id: str
    issuer_v1: str
    issuer_v2: str
    base_url: str
    _lock: threading.Lock
    _codes: dict[str, Grant]
    _redeemed: set[str]
    _refresh: dict[str, Grant]
    _audience: Callable[[str], str]
    sign: Callable[[dict[str, Any]], str]
    faults: Faults | None

    def authorize_page(self, request: Request) -> Response:
        params = request.query if request.method == "GET" else request.form()
        client = self.materials.client(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if client is None:
            return self._error_page(
                400, f"AADSTS700016: Application with identifier '{params.get('client_id', '')}' was not found."
            )
        if not (redirect_uri in client.redirect_uris or (not client.redirect_uris and is_loopback_url(redirect_uri))):
            return self._error_page(
                400,
                f"AADSTS50011: The redirect URI '{redirect_uri}' does not match the redirect URIs configured for "
                "the application.",
            )
        if params.get("response_type") != "code":
            return self._back(
                params, {"error": "unsupported_response_type", "error_description": "Only code is supported."}
            )
        if request.method == "POST" and "identity" in params:
            return self._issue_code(client, params)
        return html_response(200, self._picker(params))

    def _picker(self, params: dict[str, str]) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k != "identity"
        )
        hint = params.get("login_hint", "").lower()
        rows = "".join(
            f'<li><button type="submit" name="identity" value="{html.escape(p["oid"])}"'
            f"{' autofocus' if p['preferred_username'].lower() == hint else ''}>"
            f"{html.escape(p['name'])} <small>{html.escape(p['preferred_username'])}</small></button></li>"
            for p in self.identities
        )
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Sign in to your account</title></head><body>"
            f"<h1>Pick an account</h1><p>Sandbox Entra ID of {html.escape(self.tenant.initial_domain)}: "
            "no password here, choose who you are.</p>"
            f'<form method="post"><ul>{rows}</ul>{hidden}</form></body></html>'
        )

    def _issue_code(self, client: ClientRegistration, params: dict[str, str]) -> Response:
        person = next((p for p in self.identities if p["oid"] == params["identity"]), None)
        if person is None:
            return self._error_page(400, "AADSTS50034: The user account does not exist in this directory.")
        method = params.get("code_challenge_method", "plain")
        if params.get("code_challenge") and method not in ("S256", "plain"):
            return self._back(
                params, {"error": "invalid_request", "error_description": "Unsupported code_challenge_method."}
            )
        code = secrets.token_urlsafe(48)
        with self._lock:
            self._codes[code] = Grant(
                client_id=client.client_id,
                identity=person,
                scopes=params.get("scope", "").split(),
                expires=time.time() + CODE_LIFETIME,
                redirect_uri=params["redirect_uri"],
                nonce=params.get("nonce"),
                challenge=params.get("code_challenge"),
                challenge_method=method,
            )
        return self._back(params, {"code": code, "session_state": str(uuid.uuid4())})

    def _back(self, params: dict[str, str], values: dict[str, str]) -> Response:
        """Send the browser back to the client, in the response mode it asked for."""
        if "state" in params:
            values = {**values, "state": params["state"]}
        uri = params.get("redirect_uri", "")
        mode = params.get("response_mode", "query")
        if mode == "form_post":
            fields = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in values.items()
            )
            return html_response(
                200,
                f'<!doctype html><html><body onload="document.forms[0].submit()"><form method="post" '
                f'action="{html.escape(uri)}">{fields}<noscript><button>Continue</button></noscript></form></body></html>',
            )
        separator = "#" if mode == "fragment" else ("&" if urlsplit(uri).query else "?")
        return redirect(f"{uri}{separator}{urlencode(values)}")

    def _error_page(self, status: int, text: str) -> Response:
        return html_response(
            status,
            "<!doctype html><html><body><h1>Sorry, but we're having trouble signing you in.</h1>"
            f"<p>{html.escape(text)}</p></body></html>",
        )

    def logout(self, request: Request) -> Response:
        target = request.query.get("post_logout_redirect_uri", "")
        if target and is_loopback_url(target):
            return redirect(target)
        return html_response(200, "<!doctype html><html><body><h1>You signed out of your account</h1></body></html>")

    def _authorization_code(self, client: ClientRegistration, form: dict[str, str]) -> dict[str, Any]:
        code = form.get("code", "")
        with self._lock:
            grant = self._codes.pop(code, None)
            already = code in self._redeemed
            self._redeemed.add(code)
        if grant is None:
            if already:
                raise OAuthError(
                    400,
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
                    "existing refresh token.",
                )
            raise OAuthError(400, "invalid_grant", 70008, _EXPIRED)
        if grant.expires < time.time():
            raise OAuthError(400, "invalid_grant", 70008, _EXPIRED)
        if grant.client_id != client.client_id:
            raise OAuthError(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'code' parameter is not valid. The code was issued to another application.",
            )
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'redirect_uri' is not valid. The value must exactly match the redirect "
                "URI used to obtain the authorization code.",
            )
        if grant.challenge:
            verifier = form.get("code_verifier")
            if not verifier:
                raise OAuthError(
                    400,
                    "invalid_grant",
                    900144,
                    "The request body must contain the following parameter: 'code_verifier'.",
                )
            computed = (
                b64url(hashlib.sha256(verifier.encode("ascii")).digest())
                if grant.challenge_method == "S256"
                else verifier
            )
            if not secrets.compare_digest(computed, grant.challenge):
                raise OAuthError(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                )
        return self._user_tokens(client, grant)

    def _refresh_token(self, client: ClientRegistration, form: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            grant = self._refresh.pop(form.get("refresh_token", ""), None)
        if grant is None or grant.client_id != client.client_id or grant.expires < time.time():
            raise OAuthError(400, "invalid_grant", 70008, _EXPIRED)
        requested = form.get("scope", "").split()
        return self._user_tokens(client, grant if not requested else _replace_scopes(grant, requested))

    def _user_tokens(self, client: ClientRegistration, grant: Grant) -> dict[str, Any]:
        person = grant.identity
        now = int(time.time())
        lifetime = int(self.settings.token_lifetime)
        resource_scopes = [s for s in grant.scopes if s not in OIDC_SCOPES]
        audience, scp = GRAPH_RESOURCE, "User.Read"
        if resource_scopes:
            resource, _, _ = resource_scopes[0].rpartition("/")
            audience = self._audience(resource) if resource else GRAPH_RESOURCE
            scp = " ".join(s.rpartition("/")[2] for s in resource_scopes if not s.endswith("/.default")) or scp
            if scp == "User.Read" and audience == EXCHANGE_RESOURCE:
                scp = DELEGATED_EXCHANGE_SCOPE
        access = {
            "aud": audience, "iss": self.issuer_v1, "iat": now, "nbf": now, "exp": now + lifetime,
            "appid": client.client_id, "appidacr": "1", "idtyp": "user", "name": person["name"], "oid": person["oid"],
            "scp": scp, "sub": person["oid"], "tid": self.tenant_id, "unique_name": person["preferred_username"],
            "upn": person["preferred_username"], "uti": b64url(secrets.token_bytes(16)), "ver": "1.0",
        }  # fmt: skip
        result: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(
                [*(resource_scopes or [f"https://graph.microsoft.com/{scp}"]), *OIDC_SCOPES & set(grant.scopes)]
            ),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.sign(access),
            "client_info": b64url(json.dumps({"uid": person["oid"], "utid": self.tenant_id}).encode()),
        }
        if "openid" in grant.scopes or not grant.scopes:
            result["id_token"] = self.id_token(client.client_id, person, nonce=grant.nonce)
        if "offline_access" in grant.scopes:
            refresh = secrets.token_urlsafe(64)
            with self._lock:
                self._refresh[refresh] = Grant(client.client_id, person, grant.scopes, time.time() + REFRESH_LIFETIME)
            result["refresh_token"] = refresh
        return result

    def id_token(self, client_id: str, person: dict[str, Any], *, nonce: str | None) -> str:
        now = int(time.time())
        fault = self.faults.config.id_token if self.faults is not None else ""
        groups = list(person.get("groups", []))
        claims: dict[str, Any] = {
            "aud": "00000000-0000-0000-0000-00000000dead" if fault == "audience" else client_id,
            "iss": f"{self.base_url}/{uuid.uuid4()}/v2.0" if fault == "issuer" else self.issuer_v2,
            "iat": now - 7200 if fault == "expired" else now,
            "nbf": now - 7200 if fault == "expired" else now,
            "exp": now - 3600 if fault == "expired" else now + 3600,
            "name": person["name"],
            "oid": person["oid"],
            "preferred_username": person["preferred_username"],
            "email": person.get("email", person["preferred_username"]),
            "sub": b64url(hashlib.sha256(f"{client_id}:{person['oid']}".encode()).digest()[:24]),
            "tid": self.tenant_id,
            "ver": "2.0",
        }
        if len(groups) > self.settings.groups_overage_limit:
            # The overage indication of Learn's access-token claims reference ("groups:src1"): no groups claim, a
            # pointer to where the memberships can be read instead. The endpoint named is Azure AD Graph's, as in
            # Entra's tokens; clients are told to call Microsoft Graph's getMemberObjects for the user instead.
            claims["_claim_names"] = {"groups": "src1"}
            claims["_claim_sources"] = {
                "src1": {
                    "endpoint": f"https://graph.windows.net/{self.tenant_id}/users/{person['oid']}/getMemberObjects"
                }
            }
        else:
            claims["groups"] = groups
        if nonce:
            claims["nonce"] = nonce
        if fault == "signature":
            return jwt.encode(
                claims, _stranger_key(), algorithm="RS256", headers={"typ": "JWT", "kid": self.materials.kid}
            )
        return self.sign(claims)


_STRANGER: list[Any] = []


def _stranger_key() -> Any:
    """An RSA key the tenant's JWKS does not publish, made once: what a forged ID token would be signed with."""
    if not _STRANGER:
        _STRANGER.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _STRANGER[0]


def _replace_scopes(grant: Grant, scopes: list[str]) -> Grant:
    return Grant(grant.client_id, grant.identity, scopes, grant.expires)
