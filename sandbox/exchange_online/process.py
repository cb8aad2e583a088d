"""Start the emulator as a child process and talk to its admin endpoint: :class:`ExchangeOnlineEmulator`."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from sandbox.process import child_dies_with_parent, wait_for_port

from .server import READY_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_RUNNING: set[ExchangeOnlineEmulator] = set()
_RUNNING_LOCK = threading.Lock()


class ExchangeOnlineEmulatorError(RuntimeError):
    """The emulator could not start, or its admin endpoint refused a request."""


def trusting_session(ca_file: Path | str) -> requests.Session:
    """A requests session that trusts only the emulator's CA, whatever REQUESTS_CA_BUNDLE says."""
    session = requests.Session()
    session.trust_env = False  # otherwise REQUESTS_CA_BUNDLE overrides verify (reference/test-stack.md)
    session.verify = str(ca_file)
    return session


class ExchangeOnlineEmulator:
    """A running emulator. Its ready.json fields are attributes; admin helpers drive it in tests."""

    base_url: str
    tenant_id: str
    tenant_domain: str
    mail_domain: str
    authority: str
    exchange_url: str
    scope: str
    ca_file: Path
    clients: dict[str, dict[str, Any]]
    identities: list[dict[str, Any]]
    admin_token_file: Path
    pid: int

    def __init__(self, *, process: subprocess.Popen, workdir: Path, owns_workdir: bool, info: dict[str, Any]) -> None:
        self._process, self.workdir, self._owns_workdir, self.info = process, workdir, owns_workdir, info
        self._stop_lock = threading.Lock()
        for key in ("base_url", "tenant_id", "tenant_domain", "mail_domain", "authority", "exchange_url", "scope"):
            setattr(self, key, info[key])
        self.resource = info["resource"]
        self.graph_url: str = info["graph_url"]  # GET {graph_url}/v1.0/users
        self.graph_scope: str = info["graph_scope"]
        self.accepted_domains: list[str] = info["accepted_domains"]
        self.ca_file = Path(info["ca_file"])
        self.clients = info["clients"]
        self.identities = info["identities"]
        self.admin_token_file = Path(info["admin_token_file"])
        self.admin_token = self.admin_token_file.read_text(encoding="utf-8").strip()
        self.pid = info["pid"]
        self._admin_session = trusting_session(self.ca_file)
        self._admin_session.headers["X-Emulator-Admin-Token"] = self.admin_token

    # -- lifecycle -----------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        directory: Any = None,
        workdir: Path | None = None,
        port: int | None = None,
        rate: float | None = 1000.0,
        burst: int = 30000,
        sync_interval: float = 0.0,
        token_lifetime: int = 3600,
        proxy_cooldown: float = 0.0,
        state_file: Path | None = None,
        seed_file: Path | None = None,
        identities_file: Path | None = None,
        mail_domain: str | None = None,
        accepted_domains: list[str] | None = None,
        filter_cloud_managed: bool = True,
        hybrid_writeback: bool = False,
        source_anchor: str | None = None,
        verbose: bool = False,
        timeout: float = START_TIMEOUT,
    ) -> ExchangeOnlineEmulator:
        """Start ``python -m sandbox.exchange_online`` and wait until it serves.

        ``directory`` (a SandboxDirectory) is where its Entra Connect reads users; without it the tenant
        starts empty or from ``seed_file``. ``workdir`` defaults to a temp folder deleted on :meth:`stop`.
        ``hybrid_writeback``: Connect writes msDS-ExternalDirectoryObjectID back to AD on every tick;
        ``source_anchor``: "mS-DS-ConsistencyGuid" (the default) or "objectGUID".
        """
        owns_workdir = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="soa-exo-")) if workdir is None else Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "sandbox.exchange_online", "--workdir", str(workdir), "--port", str(port or 0)]
        argv += ["--rate", str(rate or 0), "--burst", str(burst), "--sync-interval", str(sync_interval)]
        argv += ["--token-lifetime", str(token_lifetime), "--proxy-cooldown", str(proxy_cooldown)]
        if directory is not None:
            argv += ["--ldap-url", directory.url, "--ldap-bind-dn", directory.bind_dn]
            argv += ["--ldap-password-file", str(directory.password_file), "--ldap-base-dn", directory.base_dn]
        for flag, value in (
            ("--state-file", state_file),
            ("--seed-file", seed_file),
            ("--identities-file", identities_file),
            ("--mail-domain", mail_domain),
        ):
            if value is not None:
                argv += [flag, str(value)]
        for domain in accepted_domains or []:
            argv += ["--accepted-domain", domain]
        if not filter_cloud_managed:
            argv.append("--no-filter-cloud-managed")
        if hybrid_writeback:
            argv.append("--hybrid-writeback")
        if source_anchor is not None:
            argv += ["--source-anchor", source_anchor]
        if verbose:
            argv.append("--verbose")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        log_path = workdir / "emulator.log"
        (workdir / READY_FILE).unlink(missing_ok=True)
        in_main_thread = threading.current_thread() is threading.main_thread()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                process_group=0,  # a Ctrl-C meant for the test run must not kill it behind our back
                # Linux signals the child when the forking *thread* dies: only safe from the main thread.
                preexec_fn=child_dies_with_parent if in_main_thread else None,
            )
        try:
            info = _wait_ready(process, workdir, log_path, timeout)
        except BaseException:
            _terminate(process)
            if owns_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        emulator = cls(process=process, workdir=workdir, owns_workdir=owns_workdir, info=info)
        with _RUNNING_LOCK:
            _RUNNING.add(emulator)
        return emulator

    def is_running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        """SIGTERM (the state file is flushed), SIGKILL if it hangs; delete a temp workdir. Idempotent."""
        with self._stop_lock:
            self._admin_session.close()
            _terminate(self._process)
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            with _RUNNING_LOCK:
                _RUNNING.discard(self)

    def __enter__(self) -> ExchangeOnlineEmulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<ExchangeOnlineEmulator {self.base_url} tenant {self.tenant_domain} {state}>"

    # -- clients -------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A new requests session that trusts the emulator's CA (and ignores REQUESTS_CA_BUNDLE)."""
        return trusting_session(self.ca_file)

    def client_id(self, kind: str = "secret") -> str:
        return self.clients[kind]["client_id"]

    def client_secret(self, kind: str = "secret") -> str:
        return Path(self.clients[kind]["client_secret_file"]).read_text(encoding="utf-8").strip()

    def client_credential(self, kind: str = "secret", *, public_certificate: bool = False) -> Any:
        """The ``client_credential`` msal wants: the secret, or the certificate (thumbprint or public cert form)."""
        if kind != "certificate":
            return self.client_secret(kind)
        client = self.clients["certificate"]
        credential = {"private_key": Path(client["private_key_file"]).read_text(encoding="utf-8")}
        if public_certificate:
            credential["public_certificate"] = Path(client["certificate_file"]).read_text(encoding="utf-8")
        else:
            credential["thumbprint"] = client["thumbprint"]
        return credential

    def msal_app(self, kind: str = "secret", *, public_certificate: bool = False, http_client: Any = None) -> Any:
        """An msal ConfidentialClientApplication for one of the registered clients, set up as production would."""
        import msal

        return msal.ConfidentialClientApplication(
            self.client_id(kind),
            client_credential=self.client_credential(kind, public_certificate=public_certificate),
            authority=self.authority,
            instance_discovery=False,  # never reach Microsoft's discovery host
            http_client=http_client or self.session(),
        )

    # -- admin endpoint ------------------------------------------------------------------------------

    def _admin(
        self, method: str, path: str, payload: Any = None, *, allow_404: bool = False, timeout: float = 60
    ) -> Any:
        url = f"{self.base_url}/_emulator/{path}"
        response = self._admin_session.request(method, url, json=payload, timeout=timeout)
        if allow_404 and response.status_code == 404:
            return None
        if not response.ok:
            raise ExchangeOnlineEmulatorError(f"{method} /_emulator/{path}: {response.status_code} {response.text}")
        return response.json()

    def sync(self, *, timeout: float = 900) -> dict[str, Any]:
        """Run one Entra Connect sync tick now; returns its counts (created, updated, unchanged, deleted). A tick reads
        the whole directory, which takes minutes at 200,000 users."""
        return self._admin("POST", "sync", timeout=timeout)

    def reset(self) -> dict[str, Any]:
        """Faults off, throttle and settings as started, counters zero, state rebuilt from seed and directory."""
        return self._admin("POST", "reset")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge fault settings: latency_ms, error_rate, error_status, seed, fail_next, fail_status,
        error_after_apply, replication_lag."""
        return self._admin("PUT", "faults", faults)

    def clear_faults(self) -> dict[str, Any]:
        return self._admin("DELETE", "faults")

    def set_throttle(self, rate: float | None, burst: int | None = None) -> dict[str, Any]:
        """Per-client token bucket: ``rate`` requests/s (None or 0: off), ``burst`` size. Buckets refill."""
        payload: dict[str, Any] = {"rate": rate}
        if burst is not None:
            payload["burst"] = burst
        return self._admin("PUT", "throttle", payload)

    def set_settings(self, **settings: Any) -> dict[str, Any]:
        """Change behaviour switches (see sandbox.exchange_online.config.Settings)."""
        return self._admin("PUT", "settings", settings)

    def counters(self) -> dict[str, Any]:
        return self._admin("GET", "counters")

    def set_organization(self, **properties: Any) -> dict[str, Any]:
        """Set Graph's organization sync properties: ``onPremisesLastSyncDateTime`` (ISO 8601 or None),
        ``onPremisesSyncEnabled`` (True, False, None: derived from the ticks). The next sync tick moves the time on."""
        return self._admin("PUT", "organization", properties)

    def create_mailbox(self, **props: Any) -> dict[str, Any]:
        """Create a mailbox directly (cloud-only unless IsDirSynced=True); returns its raw record."""
        return self._admin("POST", "mailboxes", props)

    def get_mailbox(self, identity: str) -> dict[str, Any] | None:
        """The raw stored record, bypassing the API (no faults, no lag, no throttle); None if absent."""
        return self._admin("GET", f"mailboxes/{quote(identity, safe='')}", allow_404=True)

    def update_mailbox(self, identity: str, **props: Any) -> dict[str, Any]:
        """Overwrite stored properties, bypassing Exchange's rules (e.g. WhenChangedUTC)."""
        return self._admin("PATCH", f"mailboxes/{quote(identity, safe='')}", props)

    def delete_mailbox(self, identity: str) -> dict[str, Any]:
        return self._admin("DELETE", f"mailboxes/{quote(identity, safe='')}")

    def mailboxes(self, fields: list[str] | None = None, *, timeout: float = 600) -> list[dict[str, Any]]:
        """Every raw record, or only ``fields`` of each (what a tenant of a million mailboxes can afford)."""
        path = "mailboxes" + (f"?fields={quote(','.join(fields), safe=',')}" if fields else "")
        return self._admin("GET", path, timeout=timeout)["value"]

    def lookup_mailboxes(self, identities: list[str], fields: list[str] | None = None) -> list[dict[str, Any]]:
        """The raw records of ``identities``, in that order (only ``fields`` of each, if given); raises if one is
        missing or ambiguous."""
        return self._admin("POST", "mailboxes/lookup", {"identities": identities, "fields": fields})["value"]

    def update_mailboxes(self, changes: list[dict[str, Any]], *, batch: int = 10000) -> int:
        """Many ``update_mailbox`` calls in a few requests: each change is ``{"Identity": ..., property: value...}``.
        Each request applies all of its changes or, when one is refused, none. Returns how many were applied."""
        updated = 0
        for start in range(0, len(changes), batch):
            updated += self._admin("PATCH", "mailboxes", {"value": changes[start : start + batch]})["updated"]
        return updated

    def license_user(self, user: str) -> dict[str, Any]:
        """License a user synced while the tenant default was on (UPN or object id): Exchange creates its mailbox,
        cloud-managed (organization.py). Returns the raw record."""
        return self._admin("POST", "licenses", {"user": user})

    def revoke_tokens(self) -> int:
        """Make Exchange refuse every access token issued so far (401 on their next use); returns how many."""
        return self._admin("POST", "tokens/revoke")["revoked"]

    def mint_token(
        self, kind: str = "secret", *, lifetime: int = 3600, audience: str | None = None, **claims: Any
    ) -> str:
        """An access token signed by the tenant key, e.g. ``lifetime=-60`` for one that has already expired.

        ``audience`` "https://graph.microsoft.com" makes a Graph token, with the client's Graph roles."""
        payload = {"client": kind, "lifetime": lifetime, "audience": audience, "claims": claims}
        return self._admin("POST", "tokens", payload)["access_token"]


def _wait_ready(process: subprocess.Popen, workdir: Path, log_path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    ready = workdir / READY_FILE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ExchangeOnlineEmulatorError(
                f"the emulator exited with status {process.returncode}:\n{_tail(log_path)}"
            )
        if ready.exists():
            info = json.loads(ready.read_text(encoding="utf-8"))
            if info.get("pid") == process.pid:
                url = urlsplit(info["base_url"])
                wait_for_port(url.hostname, url.port, timeout=max(0.5, deadline - time.monotonic()), process=process)
                return info
        time.sleep(0.01)
    raise ExchangeOnlineEmulatorError(f"the emulator was not ready within {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:].strip() or "(no output)"
    except FileNotFoundError:
        return "(no output)"


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _stop_all() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for emulator in running:
        emulator.stop()


atexit.register(_stop_all)
