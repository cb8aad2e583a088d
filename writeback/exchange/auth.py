"""Configuration of the Exchange Online client and its app-only token (msal client credentials).

The credential is a certificate (private key plus thumbprint, or plus the public certificate) or a client
secret, each read from a file named in the configuration. msal caches the token and renews it before it
expires. For an authority that is not Microsoft's (the sandbox emulator), msal must not try to reach
Microsoft's instance discovery host, and every HTTPS call trusts exactly the configured CA file:
``trust_env=False`` keeps REQUESTS_CA_BUNDLE and proxies from overriding it.
"""

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msal
import requests
from django.conf import settings
from django.core import checks
from requests.adapters import HTTPAdapter

from portal.clouds import CLOUDS
from writeback.exchange.errors import ExoAuthError, ExoInsecureUrl

EXO_SCOPE = CLOUDS["Global"].exchange_scope
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


@dataclass(frozen=True)
class ExchangeConfig:
    """Where Exchange Online is, who the app is, and how patient the client is. No secret is held here."""

    base_url: str
    tenant: str
    authority: str
    client_id: str
    scope: str = EXO_SCOPE
    graph_base_url: str = CLOUDS["Global"].graph
    graph_scope: str = CLOUDS["Global"].graph_scope
    client_secret_file: str = ""
    private_key_file: str = ""
    thumbprint: str = ""
    certificate_file: str = ""
    ca_file: str = ""
    anchor_mailbox: str = ""
    connect_timeout: float = 10.0
    timeout: float = 120.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0
    page_size: int = 1000
    verify_attempts: int = 3
    verify_delay: float = 1.0
    pool_size: int = 10
    # Wait for the rate-limit budget (Rate-Limit-* headers) to come back instead of provoking 429s; see
    # writeback/exchange/budget.py. ``pace_reserve`` requests are left unspent for other callers of the same app.
    pace: bool = True
    pace_reserve: int = 1
    # Take the budget from the one all worker processes share in Redis (writeback/exchange/shared_budget.py) instead
    # of believing this process has it all. Off unless the settings turn it on: a client built by hand (a test, a
    # script) needs no Redis.
    shared_budget: bool = False

    @classmethod
    def from_settings(cls) -> "ExchangeConfig":
        return cls(
            base_url=settings.EXO_BASE_URL,
            tenant=settings.EXO_TENANT,
            authority=settings.ENTRA_AUTHORITY,
            client_id=settings.ENTRA_CLIENT_ID,
            scope=settings.EXO_SCOPE,
            graph_base_url=settings.GRAPH_BASE_URL,
            graph_scope=settings.GRAPH_SCOPE,
            client_secret_file=settings.ENTRA_CLIENT_SECRET_FILE,
            private_key_file=settings.ENTRA_CERTIFICATE_KEY_FILE,
            thumbprint=settings.ENTRA_CERTIFICATE_THUMBPRINT,
            certificate_file=settings.ENTRA_CERTIFICATE_FILE,
            ca_file=settings.EXO_CA_FILE,
            anchor_mailbox=settings.EXO_ANCHOR_MAILBOX,
            timeout=settings.EXO_TIMEOUT_SECONDS,
            max_attempts=settings.EXO_MAX_ATTEMPTS,
            page_size=settings.EXO_PAGE_SIZE,
            pace=settings.EXO_RATE_LIMIT_PACING,
            shared_budget=settings.EXO_SHARED_BUDGET,
            max_retry_after=settings.EXO_MAX_RETRY_AFTER_SECONDS,
        )


# The settings whose URLs carry a bearer token or a client credential, and the config field each fills.
HTTPS_SETTINGS = (("EXO_BASE_URL", "base_url"), ("GRAPH_BASE_URL", "graph_base_url"), ("ENTRA_AUTHORITY", "authority"))


def insecure_url_problems(urls: dict[str, str]) -> list[str]:
    """One sentence per setting whose URL is set but not ``https://``, since a token sent over it travels in clear."""
    problems = []
    for name, url in urls.items():
        if url and urlsplit(url).scheme.lower() != "https":
            problems.append(
                f"{name} is {url!r}: it must be an https:// URL, because the portal sends a bearer token "
                "(or its client credential) to it and would otherwise send it in clear."
            )
    return problems


def require_https(config: ExchangeConfig) -> None:
    """Refuse a configuration that would send a token or credential over plain HTTP."""
    problems = insecure_url_problems({name: getattr(config, field) for name, field in HTTPS_SETTINGS})
    if problems:
        raise ExoInsecureUrl(" ".join(problems))


def check_https_settings(app_configs: object = None, **kwargs: object) -> list[checks.Error]:
    """Django system check (start-up, ``manage.py check``, every worker and web process): URLs must be https."""
    urls = {name: getattr(settings, name, "") for name, _field in HTTPS_SETTINGS}
    return [
        checks.Error(problem, hint=f"Set {name} to its https:// URL, or EXO_CLOUD to your cloud.", id="writeback.E001")
        for name, url in urls.items()
        for problem in insecure_url_problems({name: url})
    ]


def build_session(config: ExchangeConfig) -> requests.Session:
    """A pooled session that trusts the configured CA (or the system store) and nothing from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = config.ca_file or True
    adapter = HTTPAdapter(pool_connections=config.pool_size, pool_maxsize=config.pool_size, max_retries=0)
    session.mount("https://", adapter)
    return session


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ExoAuthError(f"Cannot read the {what} file {path}: {exc.strerror}.") from None


def _credential(config: ExchangeConfig) -> str | dict[str, str]:
    if config.private_key_file:
        credential = {"private_key": _read(config.private_key_file, "certificate private key")}
        if config.certificate_file:
            credential["public_certificate"] = _read(config.certificate_file, "certificate")
        if config.thumbprint:
            credential["thumbprint"] = config.thumbprint
        if len(credential) == 1:
            raise ExoAuthError("A certificate credential needs ENTRA_CERTIFICATE_THUMBPRINT or ENTRA_CERTIFICATE_FILE.")
        return credential
    if config.client_secret_file:
        return _read(config.client_secret_file, "client secret").strip()
    raise ExoAuthError("No Entra credential is configured: set ENTRA_CERTIFICATE_KEY_FILE or ENTRA_CLIENT_SECRET_FILE.")


class TokenProvider:
    """App-only bearer tokens for one resource (``scope``: Exchange by default, or Graph), cached by msal."""

    def __init__(self, config: ExchangeConfig, session: requests.Session, *, scope: str | None = None):
        require_https(config)
        self.config = config
        self.session = session
        self.scope = scope or config.scope
        self._app: msal.ConfidentialClientApplication | None = None

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            if not self.config.authority or not self.config.client_id:
                raise ExoAuthError("ENTRA_AUTHORITY and ENTRA_CLIENT_ID must be set to call Exchange Online or Graph.")
            is_microsoft = urlsplit(self.config.authority).hostname in MICROSOFT_AUTHORITY_HOSTS
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.config.client_id,
                    client_credential=_credential(self.config),
                    authority=self.config.authority,
                    http_client=self.session,
                    instance_discovery=is_microsoft,
                    validate_authority=is_microsoft,
                )
            except (ValueError, requests.RequestException) as exc:
                raise ExoAuthError(f"Cannot set up sign-in at {self.config.authority}: {exc}") from None
        return self._app

    def token(self) -> str:
        try:
            result = self._application().acquire_token_for_client(scopes=[self.scope])
        except requests.RequestException as exc:
            raise ExoAuthError(f"The token endpoint of {self.config.authority} did not answer: {exc}") from None
        if "access_token" not in result:
            error = result.get("error", "unknown_error")
            # Entra's description's first line names the cause (AADSTS code and text); the rest is trace ids.
            description = (result.get("error_description") or "").splitlines()
            raise ExoAuthError(
                f"Entra ID refused a token for {self.scope} to client {self.config.client_id}: {error}: "
                f"{description[0] if description else 'no description'}",
                code=str(error),
            )
        return result["access_token"]

    def invalidate(self) -> None:
        """Forget cached tokens so the next call asks Entra ID again."""
        if self._app is not None:
            self._app.remove_tokens_for_client()
