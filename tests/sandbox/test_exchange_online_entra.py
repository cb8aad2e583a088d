"""Contract of the emulator's Entra ID side: discovery, tokens, client authentication, sign-in.

Written from the OAuth/OIDC specs and the reference (exchange-facts §4.1, test-stack.md "msal against a
local HTTPS authority"); tokens come from real msal, never patched.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REDIRECT = "http://127.0.0.1:8000/auth/callback"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks_key(emulator, token: str):
    """The public key the JWKS publishes for the token's kid."""
    session = emulator.session()
    doc = session.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration", timeout=10).json()
    keys = session.get(doc["jwks_uri"], timeout=10).json()["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"} <= body.keys()
    return body


def self_signed() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def token_endpoint(emulator) -> str:
    return f"{emulator.authority}/oauth2/v2.0/token"


def assertion(emulator, *, key, headers, algorithm="RS256", **overrides) -> str:
    now = int(time.time())
    client_id = emulator.client_id("certificate")
    claims = {"aud": token_endpoint(emulator), "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4())}
    claims |= {"iat": now, "nbf": now, "exp": now + 600, **overrides}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def post_assertion(emulator, signed: str) -> requests.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": emulator.client_id("certificate"),
        "scope": emulator.scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
    }
    return emulator.session().post(token_endpoint(emulator), data=form, timeout=10)


def registered_key(emulator):
    path = Path(emulator.clients["certificate"]["private_key_file"])
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def registered_cert(emulator) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(emulator.clients["certificate"]["certificate_file"]).read_bytes())


# -- discovery ---------------------------------------------------------------------------------------


def test_discovery_document_describes_the_tenant_endpoints(exchange_online):
    authority = exchange_online.authority
    response = exchange_online.session().get(f"{authority}/v2.0/.well-known/openid-configuration", timeout=10)
    assert response.status_code == 200
    doc = response.json()
    assert doc["authorization_endpoint"] == f"{authority}/oauth2/v2.0/authorize"
    assert doc["token_endpoint"] == f"{authority}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{authority}/discovery/v2.0/keys"
    assert doc["issuer"] == f"{authority}/v2.0"
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
    assert all(v.startswith(exchange_online.base_url) for v in doc.values() if isinstance(v, str) and "://" in v)


def test_discovery_answers_for_the_initial_domain_too(exchange_online):
    url = f"{exchange_online.base_url}/{exchange_online.tenant_domain}/v2.0/.well-known/openid-configuration"
    doc = exchange_online.session().get(url, timeout=10).json()
    assert doc["issuer"] == f"{exchange_online.authority}/v2.0"


def test_discovery_of_an_unknown_tenant_fails_as_entra_does(exchange_online):
    url = f"{exchange_online.base_url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration"
    response = exchange_online.session().get(url, timeout=10)
    assert response.status_code == 400
    assert error_of(response)["error_codes"] == [90002]


def test_server_certificate_is_trusted_only_through_the_emulator_ca(exchange_online):
    system_trust = requests.Session()
    system_trust.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        system_trust.get(f"{exchange_online.authority}/v2.0/.well-known/openid-configuration", timeout=10)


# -- client credentials ------------------------------------------------------------------------------


def test_msal_with_a_secret_gets_an_exchange_token_signed_by_the_jwks_key(exchange_online):
    result = exchange_online.msal_app("secret").acquire_token_for_client([exchange_online.scope])
    assert result["token_type"] == "Bearer"
    token = result["access_token"]
    claims = jwt.decode(
        token, jwks_key(exchange_online, token), algorithms=["RS256"], audience="https://outlook.office365.com"
    )
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["tid"] == exchange_online.tenant_id
    assert claims["appid"] == exchange_online.client_id("secret")
    assert claims["roles"] == ["Exchange.ManageAsApp"]
    assert claims["exp"] - claims["iat"] == result["expires_in"] == 3600
    assert claims["nbf"] <= time.time() < claims["exp"]


@pytest.mark.parametrize("public_certificate", [False, True], ids=["thumbprint-RS256", "public-certificate-PS256"])
def test_msal_with_a_certificate_gets_an_exchange_token(exchange_online, public_certificate):
    app = exchange_online.msal_app("certificate", public_certificate=public_certificate)
    result = app.acquire_token_for_client([exchange_online.scope])
    assert "access_token" in result, result.get("error_description")
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["appid"] == exchange_online.client_id("certificate")
    assert claims["appidacr"] == "2"
    assert claims["roles"] == ["Exchange.ManageAsApp"]


@pytest.mark.parametrize(
    ("algorithm", "header"),
    [("RS256", "x5t"), ("PS256", "x5t#S256")],
)
def test_assertions_are_verified_against_the_registered_certificate(exchange_online, algorithm, header):
    cert = registered_cert(exchange_online)
    digest = cert.fingerprint(hashes.SHA1() if header == "x5t" else hashes.SHA256())  # noqa: S303
    signed = assertion(
        exchange_online, key=registered_key(exchange_online), algorithm=algorithm, headers={header: b64url(digest)}
    )
    response = post_assertion(exchange_online, signed)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_thumbprint_in_ready_json_is_the_certificate_sha1(exchange_online):
    cert = registered_cert(exchange_online)
    assert exchange_online.clients["certificate"]["thumbprint"].lower() == cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303


def test_wrong_secret_is_invalid_client_7000215(exchange_online):
    app = msal.ConfidentialClientApplication(
        exchange_online.client_id("secret"),
        client_credential="not-the-secret",
        authority=exchange_online.authority,
        instance_discovery=False,
        http_client=exchange_online.session(),
    )
    result = app.acquire_token_for_client([exchange_online.scope])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    raw = exchange_online.session().post(
        token_endpoint(exchange_online),
        data={"grant_type": "client_credentials", "client_id": exchange_online.client_id("secret"),
              "client_secret": "nope", "scope": exchange_online.scope},
        headers={"client-request-id": "c0ffee00-0000-4000-8000-000000000001"},
        timeout=10,
    )  # fmt: skip
    assert raw.status_code == 401
    body = error_of(raw)
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert body["correlation_id"] == "c0ffee00-0000-4000-8000-000000000001"


def test_unknown_client_is_unauthorized_client_700016(exchange_online):
    response = exchange_online.session().post(
        token_endpoint(exchange_online),
        data={"grant_type": "client_credentials", "client_id": str(uuid.uuid4()), "client_secret": "x",
              "scope": exchange_online.scope},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 400
    body = error_of(response)
    assert (body["error"], body["error_codes"]) == ("unauthorized_client", [700016])


def test_no_credential_at_all_is_invalid_client(exchange_online):
    response = exchange_online.session().post(
        token_endpoint(exchange_online),
        data={
            "grant_type": "client_credentials",
            "client_id": exchange_online.client_id("secret"),
            "scope": exchange_online.scope,
        },
        timeout=10,
    )
    assert response.status_code == 401
    assert error_of(response)["error_codes"] == [7000218]


def test_assertion_signed_by_another_key_is_an_invalid_signature(exchange_online):
    intruder_key, _ = self_signed()
    app = msal.ConfidentialClientApplication(
        exchange_online.client_id("certificate"),
        client_credential={
            "private_key": intruder_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "thumbprint": exchange_online.clients["certificate"]["thumbprint"],
        },
        authority=exchange_online.authority,
        instance_discovery=False,
        http_client=exchange_online.session(),
    )
    result = app.acquire_token_for_client([exchange_online.scope])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]
    assert "invalid signature" in result["error_description"]


def test_assertion_with_an_unregistered_certificate_is_refused(exchange_online):
    key, cert = self_signed()
    signed = assertion(exchange_online, key=key, headers={"x5t": b64url(cert.fingerprint(hashes.SHA1()))})  # noqa: S303
    response = post_assertion(exchange_online, signed)
    assert response.status_code == 401
    body = error_of(response)
    assert body["error_codes"] == [700027]
    assert "not registered" in body["error_description"]


def test_expired_assertion_is_refused(exchange_online):
    thumb = b64url(registered_cert(exchange_online).fingerprint(hashes.SHA1()))  # noqa: S303
    long_ago = int(time.time()) - 7200
    signed = assertion(
        exchange_online,
        key=registered_key(exchange_online),
        headers={"x5t": thumb},
        iat=long_ago,
        nbf=long_ago,
        exp=long_ago + 600,
    )
    response = post_assertion(exchange_online, signed)
    assert response.status_code == 401
    assert error_of(response)["error_codes"] == [700024]


def test_assertion_must_be_addressed_to_the_token_endpoint(exchange_online):
    thumb = b64url(registered_cert(exchange_online).fingerprint(hashes.SHA1()))  # noqa: S303
    signed = assertion(
        exchange_online,
        key=registered_key(exchange_online),
        headers={"x5t": thumb},
        aud="https://example.invalid/token",
    )
    response = post_assertion(exchange_online, signed)
    assert response.status_code == 401
    assert error_of(response)["error"] == "invalid_client"


def test_assertion_issuer_must_be_the_client(exchange_online):
    thumb = b64url(registered_cert(exchange_online).fingerprint(hashes.SHA1()))  # noqa: S303
    other = str(uuid.uuid4())
    signed = assertion(
        exchange_online, key=registered_key(exchange_online), headers={"x5t": thumb}, iss=other, sub=other
    )
    response = post_assertion(exchange_online, signed)
    assert response.status_code == 401
    assert error_of(response)["error_codes"] == [700021]


def test_client_credentials_need_a_default_scope(exchange_online):
    response = exchange_online.session().post(
        token_endpoint(exchange_online),
        data={"grant_type": "client_credentials", "client_id": exchange_online.client_id("secret"),
              "client_secret": exchange_online.client_secret(), "scope": "https://outlook.office365.com/Mail.Read"},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 400
    assert error_of(response)["error"] == "invalid_scope"


def test_app_without_the_permission_gets_a_token_without_roles_and_a_403(exchange_online, exo_invoke):
    result = exchange_online.msal_app("no_permission").acquire_token_for_client([exchange_online.scope])
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert "roles" not in claims
    response = exo_invoke("Get-OrganizationConfig", token=result["access_token"])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"


# -- tokens at the Exchange API ----------------------------------------------------------------------


def test_expired_token_gets_401(exo_clean, exo_invoke):
    exo_clean.set_settings(token_lifetime=1)
    result = exo_clean.msal_app("secret").acquire_token_for_client([exo_clean.scope])
    token = result["access_token"]
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    while time.time() < expires + 0.05:
        time.sleep(0.05)
    response = exo_invoke("Get-OrganizationConfig", token=token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"]["code"] == "Unauthorized"


def test_minted_expired_token_gets_401(exchange_online, exo_invoke):
    response = exo_invoke("Get-OrganizationConfig", token=exchange_online.mint_token(lifetime=-60))
    assert response.status_code == 401


def test_revoked_tokens_get_401_until_a_reset_and_later_tokens_are_good(exo_clean, exo_invoke):
    old = exo_clean.mint_token()
    assert exo_invoke("Get-OrganizationConfig", token=old).status_code == 200
    assert exo_clean.revoke_tokens() >= 1
    refused = exo_invoke("Get-OrganizationConfig", token=old)
    assert refused.status_code == 401 and "has been revoked" in refused.headers["WWW-Authenticate"]
    assert exo_invoke("Get-OrganizationConfig", token=exo_clean.mint_token()).status_code == 200
    exo_clean.reset()
    assert exo_invoke("Get-OrganizationConfig", token=old).status_code == 200


def test_token_signed_by_another_key_gets_401(exchange_online, exo_invoke, exo_token):
    forger, _ = self_signed()
    claims = jwt.decode(exo_token, options={"verify_signature": False})
    header = jwt.get_unverified_header(exo_token)
    forged = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": header["kid"], "x5t": header["x5t"]})
    assert exo_invoke("Get-OrganizationConfig", token=forged).status_code == 401


def test_tampered_token_gets_401(exo_invoke, exo_token):
    head, payload, signature = exo_token.split(".")
    claims = jwt.decode(exo_token, options={"verify_signature": False})
    claims["roles"] = ["Exchange.ManageAsApp", "Global.Admin"]
    tampered_payload = b64url(jwt.api_jws.json.dumps(claims).encode())
    assert exo_invoke("Get-OrganizationConfig", token=f"{head}.{tampered_payload}.{signature}").status_code == 401


def test_token_for_another_resource_gets_401(exchange_online, exo_invoke):
    graph_token = exchange_online.mint_token(aud="https://graph.microsoft.com")
    assert exo_invoke("Get-OrganizationConfig", token=graph_token).status_code == 401


def test_request_without_a_token_gets_401(exo_invoke):
    response = exo_invoke("Get-OrganizationConfig", token=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


# -- user sign-in: authorization code with PKCE -------------------------------------------------------


class _FormFields(HTMLParser):
    """The action and hidden fields of the auto-submitting page a form_post response is."""

    def __init__(self) -> None:
        super().__init__()
        self.action, self.fields = "", {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self.action = attributes.get("action", "")
        elif tag == "input" and attributes.get("type") == "hidden":
            self.fields[attributes["name"]] = attributes.get("value", "")


def sign_in(emulator, app, identity: dict, *, response_mode: str = "form_post") -> tuple[dict, dict]:
    """Walk the sign-in page as a browser would; returns (msal flow, auth response)."""
    flow = app.initiate_auth_code_flow([], redirect_uri=REDIRECT, response_mode=response_mode)
    session = emulator.session()
    page = session.get(flow["auth_uri"], timeout=10)
    assert page.status_code == 200
    assert identity["name"] in page.text
    params = {k: v[0] for k, v in parse_qs(urlsplit(flow["auth_uri"]).query).items()}
    endpoint = urlsplit(flow["auth_uri"])._replace(query="").geturl()
    picked = session.post(endpoint, data={**params, "identity": identity["oid"]}, allow_redirects=False, timeout=10)
    if response_mode == "form_post":
        assert picked.status_code == 200
        form = _FormFields()
        form.feed(picked.text)
        assert form.action == REDIRECT
        return flow, form.fields
    assert picked.status_code == 302
    location = picked.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return flow, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")
@pytest.mark.parametrize("response_mode", ["form_post", "query"])
def test_auth_code_flow_with_pkce_signs_in_a_demo_identity(exchange_online, response_mode):
    person = exchange_online.identities[0]
    app = exchange_online.msal_app("secret")
    flow, auth_response = sign_in(exchange_online, app, person, response_mode=response_mode)
    assert "code_challenge_method=S256" in flow["auth_uri"]
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert "id_token" in result, result
    id_token = result["id_token"]
    claims = jwt.decode(
        id_token,
        jwks_key(exchange_online, id_token),
        algorithms=["RS256"],
        audience=exchange_online.client_id("secret"),
        issuer=f"{exchange_online.authority}/v2.0",
    )
    assert claims["oid"] == person["oid"]
    assert claims["preferred_username"] == person["preferred_username"]
    assert claims["name"] == person["name"]
    assert claims["groups"] == person["groups"]
    assert claims["nonce"]  # msal checked it against the flow's nonce itself
    assert app.get_accounts()[0]["username"] == person["preferred_username"]


def test_code_exchange_checks_the_code_verifier(exchange_online):
    app = exchange_online.msal_app("secret")
    flow, auth_response = sign_in(exchange_online, app, exchange_online.identities[1])
    response = exchange_online.session().post(
        token_endpoint(exchange_online),
        data={"grant_type": "authorization_code", "client_id": exchange_online.client_id("secret"),
              "client_secret": exchange_online.client_secret(), "code": auth_response["code"],
              "redirect_uri": REDIRECT, "code_verifier": "x" * 43},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 400
    body = error_of(response)
    assert (body["error"], body["error_codes"]) == ("invalid_grant", [501481])


def test_code_exchange_checks_the_redirect_uri_and_is_single_use(exchange_online):
    app = exchange_online.msal_app("secret")
    flow, auth_response = sign_in(exchange_online, app, exchange_online.identities[2])
    form = {"grant_type": "authorization_code", "client_id": exchange_online.client_id("secret"),
            "client_secret": exchange_online.client_secret(), "code": auth_response["code"],
            "redirect_uri": "http://127.0.0.1:9999/elsewhere", "code_verifier": flow["code_verifier"]}  # fmt: skip
    session = exchange_online.session()
    assert session.post(token_endpoint(exchange_online), data=form, timeout=10).json()["error"] == "invalid_grant"
    again = session.post(token_endpoint(exchange_online), data={**form, "redirect_uri": REDIRECT}, timeout=10)
    assert again.status_code == 400
    assert error_of(again)["error_codes"] == [54005]


def test_refresh_token_gives_new_tokens(exchange_online):
    app = exchange_online.msal_app("secret")
    flow, auth_response = sign_in(exchange_online, app, exchange_online.identities[0])
    first = app.acquire_token_by_auth_code_flow(flow, auth_response)
    refreshed = app.acquire_token_by_refresh_token(first["refresh_token"], scopes=[])
    assert refreshed["id_token_claims"]["oid"] == exchange_online.identities[0]["oid"]


def test_sign_in_page_never_redirects_off_this_machine(exchange_online):
    app = exchange_online.msal_app("secret")
    flow = app.initiate_auth_code_flow([], redirect_uri="https://evil.example.com/callback", response_mode="form_post")
    response = exchange_online.session().get(flow["auth_uri"], allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert "AADSTS50011" in response.text


# -- groups past the token's limit, and ID tokens broken on purpose -----------------------------------------------


def _signed_in_claims(emulator, login_index: int = 0) -> dict:
    app = emulator.msal_app("secret")
    flow, auth_response = sign_in(emulator, app, emulator.identities[login_index], response_mode="query")
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    return jwt.decode(result["id_token"], options={"verify_signature": False})


@pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")
def test_past_the_group_limit_the_id_token_carries_the_overage_claims_and_graph_lists_the_groups(exo_clean):
    """Learn, "How to get the signed-in user group list when a group overage claim is displayed in access tokens":
    a JWT holds at most 200 groups; past that it carries no ``groups`` but ``_claim_names`` {"groups": "src1"} and
    ``_claim_sources`` {"src1": {"endpoint": ...getMemberObjects}} (also the ID and access token claims references,
    "groups:src1"). Learn "user: getMemberObjects": ``POST /users/{id}/getMemberObjects`` with
    ``securityEnabledOnly`` answers the ids as a ``Collection(Edm.String)``; application permission User.Read.All
    is enough, an app without a Graph permission gets 403 Authorization_RequestDenied."""
    person = exo_clean.identities[0]
    assert _signed_in_claims(exo_clean)["groups"] == person["groups"]  # under the limit: in the token
    exo_clean.set_settings(groups_overage_limit=0)
    claims = _signed_in_claims(exo_clean)
    assert "groups" not in claims and claims["_claim_names"] == {"groups": "src1"}
    endpoint = claims["_claim_sources"]["src1"]["endpoint"]
    assert endpoint.endswith(f"/users/{person['oid']}/getMemberObjects")

    session = exo_clean.session()
    url = f"{exo_clean.graph_url}/v1.0/users/{person['oid']}/getMemberObjects"

    def post(kind: str = "secret", body=None, target: str = url) -> requests.Response:
        token = exo_clean.msal_app(kind).acquire_token_for_client([exo_clean.graph_scope])["access_token"]
        return session.post(target, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    answer = post(body={"securityEnabledOnly": True})
    assert answer.status_code == 200
    assert answer.json() == {"@odata.context": f"{exo_clean.base_url}/v1.0/$metadata#Collection(Edm.String)",
                             "value": person["groups"]}  # fmt: skip
    assert post("no_permission", {"securityEnabledOnly": True}).json()["error"]["code"] == "Authorization_RequestDenied"
    assert post(body={}).status_code == 400
    unknown = post(body={"securityEnabledOnly": False}, target=url.replace(person["oid"], str(uuid.uuid4())))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "Request_ResourceNotFound")


@pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")
@pytest.mark.parametrize("fault", ["signature", "expired", "audience", "issuer"])
def test_the_id_token_fault_breaks_the_id_token_as_named(exo_clean, fault):
    exo_clean.set_faults(id_token=fault)
    app = exo_clean.msal_app("secret")
    flow, auth_response = sign_in(exo_clean, app, exo_clean.identities[1], response_mode="query")
    token = app.acquire_token_by_auth_code_flow(flow, auth_response)["id_token"]
    expected = {
        "signature": jwt.InvalidSignatureError,
        "expired": jwt.ExpiredSignatureError,
        "audience": jwt.InvalidAudienceError,
        "issuer": jwt.InvalidIssuerError,
    }[fault]
    with pytest.raises(expected):
        jwt.decode(token, jwks_key(exo_clean, token), algorithms=["RS256"], audience=exo_clean.client_id("secret"),
                   issuer=f"{exo_clean.authority}/v2.0")  # fmt: skip
    exo_clean.clear_faults()
    assert exo_clean.set_faults()["id_token"] == ""
