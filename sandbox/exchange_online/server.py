"""The emulator process: one HTTPS server (stdlib, TLS from the generated CA) serving every route.

``run(options)`` prepares the workdir, binds the port, loads the state (state file, else seed file, then a
first sync tick from the directory), writes ``ready.json`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ldap3.core.exceptions import LDAPException

from sandbox.directory.users import dns_domain

from .admin import AdminApi
from .api import Counters, ExchangeApi
from .cmdlets import Cmdlets
from .config import DEFAULT_MAIL_DOMAIN, EXCHANGE_RESOURCE, GRAPH_AUDIENCE, Options, Tenant, load_identities
from .entra import Entra
from .entra_users import EntraUsers
from .errors import OAuthError
from .faults import Faults
from .graph import GraphApi
from .graph_organization import Organization
from .mailboxes import from_properties
from .materials import Materials, prepare, write_atomic
from .state import Persister, TenantState
from .sync import DirectorySync
from .throttle import Throttle
from .web import Request, Response, html_response, json_response

log = logging.getLogger("sandbox.exchange_online")
READY_FILE = "ready.json"
_ENTRA_ROUTES = {
    ("GET", "v2.0/.well-known/openid-configuration"): "openid_configuration",
    ("GET", "discovery/v2.0/keys"): "jwks",
    ("GET", "discovery/keys"): "jwks",
    ("POST", "oauth2/v2.0/token"): "token",
    ("GET", "oauth2/v2.0/authorize"): "authorize_page",
    ("POST", "oauth2/v2.0/authorize"): "authorize_page",
    ("GET", "oauth2/v2.0/logout"): "logout",
}


class Emulator:
    """Everything one emulated tenant is made of, and the request router."""

    def __init__(self, options: Options, materials: Materials, base_url: str) -> None:
        self.options, self.materials, self.base_url = options, materials, base_url
        ldap = options.ldap
        mail_domain = options.mail_domain or (dns_domain(ldap.base_dn) if ldap else DEFAULT_MAIL_DOMAIN)
        self.tenant = Tenant(materials.tenant_id, mail_domain, tuple(options.accepted_domains))
        self.settings = copy.deepcopy(options.settings)
        self.identities = load_identities(options.identities_file, mail_domain)
        self.state = TenantState()
        self.faults = Faults()
        self.throttle = Throttle(options.rate, options.burst)
        self.counters = Counters()
        self.entra = Entra(
            materials=materials,
            tenant=self.tenant,
            settings=self.settings,
            identities=self.identities,
            base_url=base_url,
            faults=self.faults,
        )
        self.cmdlets = Cmdlets(
            state=self.state, tenant=self.tenant, settings=self.settings, faults=self.faults, base_url=base_url
        )
        self.api = ExchangeApi(
            entra=self.entra,
            cmdlets=self.cmdlets,
            throttle=self.throttle,
            faults=self.faults,
            tenant=self.tenant,
            counters=self.counters,
        )
        self.entra_users = EntraUsers()
        self.sync = DirectorySync(
            state=self.state, tenant=self.tenant, settings=self.settings, source=ldap, entra_users=self.entra_users
        )
        self.organization = Organization(self.tenant, self.sync)
        self.graph = GraphApi(
            entra=self.entra,
            users=self.entra_users,
            state=self.state,
            base_url=base_url,
            organization=self.organization,
        )
        self.admin = AdminApi(self)
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.persister = Persister(self.state, options.state_file) if options.state_file else None

    # -- state ---------------------------------------------------------------------------------------

    def load_initial(self) -> None:
        state_file = self.options.state_file
        if state_file is not None and state_file.exists():
            self.state.load(json.loads(state_file.read_text(encoding="utf-8")))
            log.info("loaded %d mailboxes from %s", len(self.state), state_file)
        else:
            self._load_seed()
        if self.options.ldap is not None:
            with self._tick_lock:
                log.info("first sync tick: %s", self.sync.tick(initial=True))

    def _load_seed(self) -> None:
        if self.options.seed_file is None:
            return
        data = json.loads(self.options.seed_file.read_text(encoding="utf-8"))
        items = data.get("mailboxes", []) if isinstance(data, dict) else data
        for props in items:
            self.state.add(from_properties(props, self.tenant, add_moera=self.settings.add_moera), created=0.0)

    def tick(self) -> dict[str, Any]:
        with self._tick_lock:
            return self.sync.tick()

    def reset(self) -> dict[str, Any]:
        """Back to how the emulator started: faults off, start throttle and settings, fresh state, zero counters."""
        self.faults.reset()
        self.entra.clear_revocations()
        self.organization.clear()
        self.throttle.configure(self.options.rate, self.options.burst)
        self.settings.update(self.options.settings.as_dict())
        with self._tick_lock, self.state.lock:
            self.state.clear()
            self.entra_users.clear()
            self._load_seed()
            stats = self.sync.tick(initial=True)
        self.counters.reset()
        return {"mailboxes": len(self.state), "sync": stats}

    def counters_snapshot(self) -> dict[str, Any]:
        return {
            **self.counters.describe(),
            "faults_injected": self.faults.injected,
            "tokens_issued": self.entra.tokens_issued,
            "sync_ticks": self.sync.ticks,
        }

    # -- background work -----------------------------------------------------------------------------

    def start_background(self) -> None:
        if self.persister is not None:
            self.persister.start()
        if self.options.sync_interval > 0 and self.options.ldap is not None:
            thread = threading.Thread(target=self._sync_loop, name="exo-sync", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.options.sync_interval):
            try:
                self.tick()
            except (OSError, LDAPException):
                log.exception("sync tick failed")

    def stop_background(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.persister is not None:
            self.persister.stop()

    # -- routing -------------------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        parts = [unquote(part) for part in request.path.strip("/").split("/")]
        if parts[0] == "_emulator":
            return self.admin.handle(request, parts[1:])
        api_path = len(parts) == 4 and [p.lower() for p in parts[:2]] == ["adminapi", "beta"]
        if api_path and parts[3].lower() == "invokecommand" and request.method == "POST":
            return self.api.handle(request, parts[2])
        graph = parts[0].lower() == "v1.0"
        response = self.graph.handle(request, parts[1:]) if graph else self._entra(request, parts)
        self.counters.count(status=response.status)
        return response

    def _entra(self, request: Request, parts: list[str]) -> Response:
        handler = _ENTRA_ROUTES.get((request.method, "/".join(parts[1:]).lower())) if len(parts) > 1 else None
        if handler is None:
            return json_response(404, {"error": "not_found", "error_description": f"No route for {request.path}"})
        if not self.tenant.matches(parts[0]):
            error = OAuthError(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{parts[0]}' not found. Check to make sure you have the correct tenant ID and are signing "
                "into the correct cloud.",
            )
            if handler == "authorize_page":
                return html_response(400, f"<!doctype html><p>{error.aadsts}: {error.text}</p>")
            correlation = request.headers.get("client-request-id")
            return json_response(400, error.body(base_url=self.base_url, correlation_id=correlation))
        method = getattr(self.entra, handler)
        return method(request) if handler in ("token", "authorize_page", "logout") else method()

    # -- ready.json ----------------------------------------------------------------------------------

    def ready_info(self) -> dict[str, Any]:
        authority = f"{self.base_url}/{self.materials.tenant_id}"
        return {
            "base_url": self.base_url,
            "tenant_id": self.materials.tenant_id,
            "tenant_domain": self.tenant.initial_domain,
            "mail_domain": self.tenant.mail_domain,
            "accepted_domains": [d["DomainName"] for d in self.tenant.accepted_domains()],
            "authority": authority,
            "exchange_url": f"{self.base_url}/adminapi/beta/{self.materials.tenant_id}/InvokeCommand",
            "resource": EXCHANGE_RESOURCE,
            "scope": f"{EXCHANGE_RESOURCE}/.default",
            # Microsoft Graph is served by the same server: GET {graph_url}/v1.0/users with a token for graph_scope.
            "graph_url": self.base_url,
            "graph_scope": f"{GRAPH_AUDIENCE}/.default",
            "ca_file": str(self.materials.ca_file),
            "clients": {kind: client.describe() for kind, client in self.materials.clients.items()},
            "identities": self.identities,
            "admin_url": f"{self.base_url}/_emulator",
            "admin_token_file": str(self.materials.admin_token_file),
            "state_file": str(self.options.state_file) if self.options.state_file else None,
            "ldap_url": self.options.ldap.url if self.options.ldap else None,
            "pid": os.getpid(),
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a client session reuses its TLS connection
    server_version = "SandboxExchangeOnline/1.0"
    sys_version = ""
    timeout = 120
    # Headers and body go out in separate writes; with Nagle on, the body waits for the client's delayed
    # ACK of the headers (~40 ms a request on a keep-alive connection).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.connection.do_handshake()  # in this connection's thread, not in the accept loop

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        request = Request.parse(self.command, self.path, headers, body)
        response = self.server.emulator.route(request)  # type: ignore[attr-defined]
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that go away or fail the handshake are routine here; anything else is worth a traceback.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | ssl.SSLError | TimeoutError | socket.timeout):
            log.debug("connection from %s ended: %s", client_address, error)
            return
        log.exception("error serving %s", client_address)


def run(options: Options) -> int:
    workdir = options.workdir.resolve()
    ready_path = workdir / READY_FILE
    ready_path.unlink(missing_ok=True)
    materials = prepare(workdir)
    httpd = _Server(("127.0.0.1", options.port), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(materials.server_cert_file, materials.server_key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    base_url = f"https://127.0.0.1:{httpd.server_address[1]}"
    emulator = Emulator(options, materials, base_url)
    httpd.emulator = emulator  # type: ignore[attr-defined]
    emulator.load_initial()

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    emulator.start_background()
    write_atomic(ready_path, json.dumps(emulator.ready_info(), indent=2).encode())
    log.info("serving %s (%d mailboxes)", base_url, len(emulator.state))
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        emulator.stop_background()
        httpd.server_close()
        ready_path.unlink(missing_ok=True)
    return 0


def ready_path(workdir: Path) -> Path:
    return workdir / READY_FILE
