"""Signing in with Entra ID: msal's authorization code flow with PKCE, the ID token checked, groups made roles.

``signin_begin`` starts msal's flow (state, nonce and PKCE verifier kept in the session) and returns the authorize
URL. ``signin_complete`` hands the redirect's parameters to msal, which refuses a state that is not the one sent
(ValueError) and an ID token whose nonce is not the hash of the one sent (RuntimeError), and redeems the code with
the verifier. msal checks no signature (it trusts the TLS channel to the token endpoint), so the ID token is
verified here against the tenant's published keys, with its issuer, audience, expiry and nonce. The groups come
from the token's ``groups`` claim or, past the token's group limit (the overage indication ``_claim_names`` /
``_claim_sources``, or ``hasgroups``), from Microsoft Graph's ``getMemberObjects`` for the user, with the portal's
app-only token. Then the user is found by object id (or created), their group-held roles re-evaluated
(portal.group_roles), and the outcome audited: ``portal.signin.succeeded`` (method entra) or
``portal.signin.failed`` with the reason, including "no access" for a person whose groups map to no role.

The app registration and credential are the portal's Exchange app's (ENTRA_CLIENT_ID with ENTRA_CLIENT_SECRET_FILE
or the certificate), and every HTTPS call trusts EXO_CA_FILE when it is set, as the Exchange client does.
"""

import hashlib
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import msal
import requests
from django.conf import settings
from django.contrib.auth.base_user import BaseUserManager
from django.db import transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.group_roles import IncompatibleGroupRoles, entra_roles_apply
from portal.models import EntraAccount, User
from portal.roles import granted_actions

SESSION_KEY = "entra_signin_flow"
CLOCK_SKEW_SECONDS = 120
JWKS_MAX_AGE_SECONDS = 3600
_MICROSOFT_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)
_USERNAME_LENGTH = 150


class SignInRefused(Exception):
    """Entra sign-in did not let the person in. ``message`` is for them; ``outcome`` goes into the audit event."""

    def __init__(self, message: str, *, outcome: str, no_access: bool = False):
        super().__init__(message)
        self.message, self.outcome, self.no_access = message, outcome, no_access


@dataclass(frozen=True)
class EntraSignIn:
    user: User
    roles: list[str]


def entra_signin_available() -> bool:
    """Is sign-in with Entra ID switched on and configured (an app id and a credential)?"""
    return bool(
        settings.ENTRA_SIGNIN_ENABLED
        and settings.ENTRA_AUTHORITY
        and settings.ENTRA_CLIENT_ID
        and (settings.ENTRA_CLIENT_SECRET_FILE or settings.ENTRA_CERTIFICATE_KEY_FILE)
    )


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE or a proxy must not replace the configured trust
    session.verify = settings.EXO_CA_FILE or True
    return session


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SignInRefused(
            "Sign-in with Entra ID is not set up correctly on this portal; tell its administrators.",
            outcome=f"cannot read the {what} file {path}: {exc.strerror}",
        ) from None


def _credential() -> str | dict[str, str]:
    if settings.ENTRA_CERTIFICATE_KEY_FILE:
        credential = {"private_key": _read(settings.ENTRA_CERTIFICATE_KEY_FILE, "certificate private key")}
        if settings.ENTRA_CERTIFICATE_FILE:
            credential["public_certificate"] = _read(settings.ENTRA_CERTIFICATE_FILE, "certificate")
        if settings.ENTRA_CERTIFICATE_THUMBPRINT:
            credential["thumbprint"] = settings.ENTRA_CERTIFICATE_THUMBPRINT
        return credential
    return _read(settings.ENTRA_CLIENT_SECRET_FILE, "client secret").strip()


def _application(http: requests.Session) -> msal.ConfidentialClientApplication:
    microsoft = urlsplit(settings.ENTRA_AUTHORITY).hostname in _MICROSOFT_HOSTS
    try:
        return msal.ConfidentialClientApplication(
            settings.ENTRA_CLIENT_ID,
            client_credential=_credential(),
            authority=settings.ENTRA_AUTHORITY,
            http_client=http,
            instance_discovery=microsoft,
            validate_authority=microsoft,
        )
    except (ValueError, requests.RequestException) as exc:
        raise SignInRefused(
            "Entra ID cannot be reached just now; try again in a moment, or use a local account if you have one.",
            outcome=f"cannot set up msal against {settings.ENTRA_AUTHORITY}: {exc}",
        ) from None


def signin_begin(session, *, redirect_uri: str, next_url: str) -> str:
    """Start a sign-in: keep msal's flow in ``session`` and return the URL to send the browser to."""
    with _http() as http, warnings.catch_warnings():
        # msal recommends form_post, but Entra's form_post is a cross-site POST to the portal, which the browser
        # sends without the (SameSite=Lax) session cookie holding the flow; the query's code is bound to this
        # session by state, to the ID token by nonce and to the verifier by PKCE.
        warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
        flow = _application(http).initiate_auth_code_flow(scopes=[], redirect_uri=redirect_uri, response_mode="query")
    session[SESSION_KEY] = {"flow": flow, "next": next_url, "started": time.time()}
    return flow["auth_uri"]


def pending_next(session) -> str:
    return (session.get(SESSION_KEY) or {}).get("next", "")


# The tenant's signing keys by JWKS URL: (fetched at, PyJWKSet). Refetched when older than an hour or when a token
# names a key not in the set (Entra rolls its keys over).
_JWKS: dict[str, tuple[float, jwt.PyJWKSet]] = {}
_JWKS_LOCK = threading.Lock()


def _signing_key(http: requests.Session, jwks_uri: str, kid: str) -> jwt.PyJWK | None:
    for refresh in (False, True):
        with _JWKS_LOCK:
            cached = _JWKS.get(jwks_uri)
        if refresh or cached is None or time.time() - cached[0] > JWKS_MAX_AGE_SECONDS:
            response = http.get(jwks_uri, timeout=10)
            response.raise_for_status()
            cached = (time.time(), jwt.PyJWKSet.from_dict(response.json()))
            with _JWKS_LOCK:
                _JWKS[jwks_uri] = cached
        key = next((k for k in cached[1].keys if k.key_id == kid), None)
        if key is not None:
            return key
    return None


def _refused_token(reason: str) -> SignInRefused:
    return SignInRefused(
        "Entra ID's answer could not be trusted, so you were not signed in. Try again; if it happens again, tell "
        "the portal's administrators.",
        outcome=f"ID token refused: {reason}",
    )


_DISCOVERY: dict[str, tuple[float, dict]] = {}


def _discovery(http: requests.Session) -> dict:
    """The authority's OpenID configuration (its issuer and keys' address), kept as long as its keys are: it is the
    same document for every sign-in, and reading it each time added a round trip to Entra to every one."""
    url = f"{settings.ENTRA_AUTHORITY.rstrip('/')}/v2.0/.well-known/openid-configuration"
    with _JWKS_LOCK:
        cached = _DISCOVERY.get(url)
    if cached is None or time.time() - cached[0] > JWKS_MAX_AGE_SECONDS:
        response = http.get(url, timeout=10)
        response.raise_for_status()
        cached = (time.time(), response.json())
        with _JWKS_LOCK:
            _DISCOVERY[url] = cached
    return cached[1]


def validate_id_token(http: requests.Session, id_token: str, *, nonce: str) -> dict:
    """The claims of ``id_token`` once its signature (tenant JWKS), issuer, audience, expiry and nonce check out."""
    try:
        metadata = _discovery(http)
        header = jwt.get_unverified_header(id_token)
        key = _signing_key(http, metadata["jwks_uri"], header.get("kid", ""))
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise SignInRefused(
            "Entra ID's signing keys could not be read just now; try again in a moment.",
            outcome=f"cannot read the tenant's signing keys: {exc}",
        ) from None
    except jwt.PyJWTError as exc:
        raise _refused_token(f"malformed ({exc})") from None
    if key is None:
        raise _refused_token("signed with a key the tenant does not publish")
    try:
        claims = jwt.decode(
            id_token,
            key=key.key,
            algorithms=["RS256"],
            audience=settings.ENTRA_CLIENT_ID,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iat", "aud", "iss", "oid", "tid"], "verify_iss": False},
        )
    except jwt.InvalidSignatureError:
        raise _refused_token("signature does not verify") from None
    except jwt.ExpiredSignatureError:
        raise _refused_token("expired") from None
    except jwt.InvalidAudienceError:
        raise _refused_token("issued to another application (audience)") from None
    except jwt.PyJWTError as exc:
        raise _refused_token(str(exc)) from None
    # A multi-tenant authority ("organizations") publishes the issuer with a {tenantid} placeholder, which any tenant's
    # token would fill: only the portal's own tenant (EXO_TENANT, by id) may then sign people in.
    published = metadata.get("issuer", "")
    if "{tenantid}" in published and str(claims.get("tid", "")).lower() != settings.EXO_TENANT.lower():
        raise _refused_token(f"issued by tenant {claims.get('tid')!r}, not this portal's tenant")
    issuer = published.replace("{tenantid}", str(claims.get("tid", "")))
    if not issuer or claims.get("iss") != issuer:
        raise _refused_token(f"issuer {claims.get('iss')!r} is not {issuer!r}")
    if claims.get("nonce") != nonce:
        raise _refused_token("nonce does not match the sign-in started here")
    return claims


def _overage(claims: dict) -> bool:
    return "groups" in (claims.get("_claim_names") or {}) or bool(claims.get("hasgroups"))


def _graph_groups(http: requests.Session, app: msal.ConfidentialClientApplication, object_id: str) -> list[str]:
    """The user's group ids from Microsoft Graph (getMemberObjects), with the portal's app-only token."""
    failed = SignInRefused(
        "You belong to too many groups for Entra ID to list them in the sign-in, and Microsoft Graph could not be "
        "asked for them just now. Try again in a moment.",
        outcome="",
    )
    try:
        token = app.acquire_token_for_client(scopes=[settings.GRAPH_SCOPE])
        if "access_token" not in token:
            failed.outcome = f"groups overage: no Graph token: {token.get('error')}"
            raise failed
        response = http.post(
            f"{settings.GRAPH_BASE_URL.rstrip('/')}/v1.0/users/{object_id}/getMemberObjects",
            json={"securityEnabledOnly": True},
            headers={"Authorization": f"Bearer {token['access_token']}"},
            timeout=20,
        )
        if response.status_code != 200:
            failed.outcome = f"groups overage: Graph answered {response.status_code}: {response.text[:300]}"
            raise failed
        return [str(g) for g in response.json().get("value", [])]
    except (requests.RequestException, ValueError) as exc:
        failed.outcome = f"groups overage: Graph not reachable: {exc}"
        raise failed from None


def _nonce_hash(nonce: str) -> str:
    # msal sends the SHA-256 (hex) of the flow's nonce and expects it back in the ID token.
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()


def _claims_and_groups(session, params: dict[str, str]) -> tuple[dict, list[str]]:
    pending = session.pop(SESSION_KEY, None)
    if not pending or "flow" not in pending:
        raise SignInRefused(
            "No sign-in was in progress in this browser (it may have taken too long, or been started elsewhere). "
            "Start again.",
            outcome="no sign-in in progress in this session",
        )
    flow = pending["flow"]
    if params.get("error") and params.get("state") != flow.get("state"):
        raise SignInRefused(
            "This sign-in answer does not belong to the sign-in started here, so it was refused. Start again.",
            outcome="state refused: an error answer without this sign-in's state",
        )
    if params.get("error"):
        description = (params.get("error_description") or "").splitlines()
        raise SignInRefused(
            "Entra ID did not sign you in. " + (description[0] if description else ""),
            outcome=f"Entra ID answered {params['error'][:100]}: {description[0][:300] if description else ''}",
        )
    with _http() as http:
        app = _application(http)
        try:
            result = app.acquire_token_by_auth_code_flow(flow, params)
        except ValueError as exc:  # msal: state missing or not the one sent (a forged or replayed redirect)
            raise SignInRefused(
                "This sign-in answer does not belong to the sign-in started here, so it was refused. Start again.",
                outcome=f"state refused: {str(exc)[:200]}",
            ) from None
        except RuntimeError as exc:  # msal: the ID token's nonce is not the one sent
            raise _refused_token(f"nonce refused by msal: {str(exc)[:200]}") from None
        except requests.RequestException as exc:
            raise SignInRefused(
                "Entra ID cannot be reached just now; try again in a moment.",
                outcome=f"token endpoint not reachable: {exc}",
            ) from None
        if "error" in result or "id_token" not in result:
            description = (result.get("error_description") or "no ID token").splitlines()
            raise SignInRefused(
                "Entra ID refused to complete the sign-in. Start again.",
                outcome=f"token request refused: {result.get('error', '')}: {description[0][:300]}",
            )
        claims = validate_id_token(http, result["id_token"], nonce=_nonce_hash(flow["nonce"]))
        groups = _graph_groups(http, app, claims["oid"]) if _overage(claims) else list(claims.get("groups") or [])
    return claims, [g.lower() for g in groups]


def _audit(action: str, *, user: User | None, claims: dict, address: str, **details) -> None:
    name = str(claims.get("preferred_username") or claims.get("oid") or "")[:_USERNAME_LENGTH]
    audit_record(
        actor=user,
        action=action,
        object_type="portal.user",
        object_id=str(user.pk) if user else "",
        object_repr=name,
        after={"username": name, "address": address, "method": "entra", "object_id": claims.get("oid", ""),
               **details},
    )  # fmt: skip


def refusal_audited(refused: SignInRefused, *, address: str, claims: dict | None = None) -> None:
    """Record a refused Entra sign-in (in its own transaction: the refusal itself changed nothing)."""
    with transaction.atomic():
        _audit("portal.signin.failed", user=None, claims=claims or {}, address=address, outcome=refused.outcome)


def _account_for(claims: dict) -> User:
    account = EntraAccount.objects.select_related("user").filter(object_id=claims["oid"]).first()
    name = str(claims.get("preferred_username") or claims["oid"])[:_USERNAME_LENGTH]
    full_name = str(claims.get("name") or "")
    first, _, last = full_name.partition(" ")
    if account is None:
        if User.objects.filter(username__iexact=name).exists():
            raise SignInRefused(
                f"The portal already has an account named {name} that is not linked to your Entra ID identity, "
                "so you were not signed in. Ask an administrator to rename or remove that account.",
                outcome="the user name is taken by an account not linked to this Entra identity",
            )
        user = User(username=name, first_name=first[:150], last_name=last[:150],
                    email=BaseUserManager.normalize_email(str(claims.get("email") or ""))[:254])  # fmt: skip
        user.set_unusable_password()  # only Entra signs this account in
        user.save()
        account = EntraAccount.objects.create(user=user, object_id=claims["oid"], tenant_id=claims.get("tid", ""))
        audit_record(actor=None, action="portal.user.created", obj=user, before=None,
                     after={"username": name, "method": "entra", "object_id": claims["oid"]},
                     reason="First sign-in with Entra ID.")  # fmt: skip
    user = account.user
    if not user.is_active:
        raise SignInRefused(
            "Your portal account is disabled. Ask an administrator if you need access.",
            outcome="account disabled",
        )
    return user


def signin_complete(session, params: dict[str, str], *, address: str) -> EntraSignIn:
    """Finish the sign-in from the redirect's parameters: the signed-in user, or SignInRefused (already audited)."""
    claims: dict = {}
    try:
        claims, groups = _claims_and_groups(session, params)
        with transaction.atomic():
            user = _account_for(claims)
            account = user.entra_account
            account.groups, account.last_signin_at = groups, timezone.now()
            account.save(update_fields=["groups", "last_signin_at"])
            try:
                roles = entra_roles_apply(user=user, group_ids=groups)
            except IncompatibleGroupRoles as exc:
                raise SignInRefused(str(exc), outcome="groups give roles that cannot be combined") from None
            # A person without access still gets their account (an administrator can then grant a role by hand),
            # and losing roles their groups no longer give must stick: so this commits before the refusal.
            no_access = not granted_actions(user)
            if no_access:
                _audit("portal.signin.failed", user=user, claims=claims, address=address,
                       outcome="no access: no portal role for the user's groups", groups=groups)  # fmt: skip
            else:
                _audit("portal.signin.succeeded", user=user, claims=claims, address=address, roles=roles,
                       groups=groups)  # fmt: skip
        if no_access:
            raise SignInRefused(
                f"You signed in with Entra ID as {user.get_username()}, but none of your groups gives access to the "
                "SOA Portal.",
                outcome="no access",
                no_access=True,
            )
    except SignInRefused as refused:
        if not refused.no_access:
            refusal_audited(refused, address=address, claims=claims)
        raise
    return EntraSignIn(user=user, roles=roles)
