"""Pytest fixtures for the Exchange Online + Entra ID emulator (sandbox.exchange_online).

Register with ``pytest_plugins = ["tests.exchange_fixtures"]`` in the root conftest, or bind the fixtures
a module uses at its top (``exchange_online = exchange_fixtures.exchange_online``; a plain import trips
ruff's F811 at every test that takes the fixture). Either way there is one emulator per run.

- ``exchange_online`` (session): one emulator whose Entra Connect reads the session's ``directory``.
- ``exo_clean``: resets it before and after the test (faults off, throttle and settings as started,
  counters zero, mailboxes rebuilt from the directory), and returns it.
- ``exo_token`` (session): an app-only access token of the secret client, obtained through real msal.
- ``exo_invoke``: ``exo_invoke(cmdlet, params, *, token=..., url=..., headers=..., body=...)`` POSTs one
  InvokeCommand over HTTPS and returns the ``requests.Response``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import requests

from sandbox.directory import SandboxDirectory
from sandbox.exchange_online import ExchangeOnlineEmulator
from sandbox.seed import SeedReport, seed_tenant
from writeback.exchange import ExchangeConfig

Invoke = Callable[..., requests.Response]


# One emulator (and one token) per directory for the whole run, however many times these fixtures are
# registered: a test module importing them gets its own fixture definitions, which would otherwise each start
# their own emulator.
_EMULATORS: dict[int, ExchangeOnlineEmulator] = {}
_TOKENS: dict[int, str] = {}


@pytest.fixture(scope="session")
def exchange_online(directory, tmp_path_factory) -> Iterator[ExchangeOnlineEmulator]:
    """The emulator for the whole session, synced from the session's sandbox directory."""
    shared = _EMULATORS.get(id(directory))
    if shared is not None and shared.is_running():
        yield shared
        return
    workdir = tmp_path_factory.mktemp("exchange-online")
    with ExchangeOnlineEmulator.start(directory=directory, workdir=workdir) as emulator:
        _EMULATORS[id(directory)] = emulator
        yield emulator
        _EMULATORS.pop(id(directory), None)


@pytest.fixture
def exo_clean(exchange_online: ExchangeOnlineEmulator) -> Iterator[ExchangeOnlineEmulator]:
    """The session emulator, reset before the test and again after it so nothing leaks into the next one, with the
    Exchange budget the portal's workers share for it in Redis (writeback.exchange.shared_budget)."""
    exchange_online.reset()
    forget_shared_budget(exchange_online)
    yield exchange_online
    exchange_online.reset()
    forget_shared_budget(exchange_online)


def forget_shared_budget(emulator: ExchangeOnlineEmulator | None = None, *, tenant: str = "") -> None:
    """Drop what the portal learned about the budget of ``emulator`` (or ``tenant``) in Redis: a throttle another test
    set is not this one's."""
    import redis
    from django.conf import settings

    from writeback.exchange.shared_budget import budget_key

    tenant = emulator.tenant_id if emulator is not None else tenant
    if not tenant:
        return
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=budget_key(tenant, "*")))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def exo_token(exchange_online: ExchangeOnlineEmulator) -> str:
    """An access token for https://outlook.office365.com of the secret client (Exchange.ManageAsApp)."""
    if id(exchange_online) not in _TOKENS:
        result = exchange_online.msal_app("secret").acquire_token_for_client([exchange_online.scope])
        assert "access_token" in result, result
        _TOKENS[id(exchange_online)] = result["access_token"]
    return _TOKENS[id(exchange_online)]


@pytest.fixture
def exo_invoke(exchange_online: ExchangeOnlineEmulator, exo_token: str) -> Iterator[Invoke]:
    """Call InvokeCommand with the documented body; keyword overrides for the negative cases."""
    session = exchange_online.session()

    def invoke(
        cmdlet: str,
        parameters: dict[str, Any] | None = None,
        *,
        token: str | None = exo_token,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        payload = body if body is not None else {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        sent.update(headers or {})
        return session.post(url or exchange_online.exchange_url, json=payload, headers=sent, timeout=30, **kwargs)

    yield invoke
    session.close()


@contextmanager
def private_tenant(*, users: int, seed: int) -> Iterator[tuple[SandboxDirectory, ExchangeOnlineEmulator, SeedReport]]:
    """A seeded directory and emulator of a test module's own, with the portal's settings pointing at them.

    For modules that change the tenant freely; the settings are restored when the block ends.
    """

    with (
        SandboxDirectory.start(users=users, seed=seed) as directory,
        ExchangeOnlineEmulator.start(directory=directory) as exchange,
    ):
        report = seed_tenant(directory, exchange, seed=seed)
        with portal_points_at(directory, exchange):
            yield directory, exchange, report


@contextmanager
def portal_points_at(directory, exchange) -> Iterator[None]:
    """The portal's directory and Exchange settings pointing at ``directory`` and ``exchange`` until the block ends
    (restored after it)."""
    from django.conf import settings

    client = exchange.clients["secret"]
    values = {
        "LDAP_URL": directory.url, "LDAP_BIND_DN": directory.bind_dn,
        "LDAP_PASSWORD_FILE": str(directory.password_file), "LDAP_BASE_DN": directory.base_dn,
        "EXO_BASE_URL": exchange.base_url, "EXO_TENANT": exchange.tenant_id, "ENTRA_AUTHORITY": exchange.authority,
        "GRAPH_BASE_URL": exchange.base_url,
        "ENTRA_CLIENT_ID": client["client_id"], "ENTRA_CLIENT_SECRET_FILE": client["client_secret_file"],
        "EXO_CA_FILE": str(exchange.ca_file),
    }  # fmt: skip
    saved = {name: getattr(settings, name) for name in values}
    for name, value in values.items():
        setattr(settings, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)


class RecordingSleep:
    """Really sleeps (the emulator's bucket must refill), and remembers how long it was asked to."""

    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(seconds)


def exchange_config(emulator, kind: str = "secret", **overrides) -> ExchangeConfig:
    """A client configuration for the emulator's ``kind`` of app (secret or certificate), with short backoffs."""
    client = emulator.clients[kind]
    return replace(
        ExchangeConfig(
            base_url=emulator.base_url,
            tenant=emulator.tenant_id,
            authority=emulator.authority,
            client_id=client["client_id"],
            client_secret_file=client.get("client_secret_file", ""),
            private_key_file=client.get("private_key_file", ""),
            thumbprint=client.get("thumbprint", ""),
            ca_file=str(emulator.ca_file),
            backoff_base=0.05,
            backoff_max=0.2,
            verify_delay=0.05,
        ),
        **overrides,
    )
