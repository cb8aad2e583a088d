"""The test-only admin endpoint, ``/_emulator/...``, guarded by the admin token from the workdir.

Send the token as ``X-Emulator-Admin-Token: <token>`` (or ``Authorization: Bearer <token>``). Routes:

==========  ===============================  ==============================================================
GET         /_emulator/health                ``{"ok": true, "mailboxes": N}``
POST        /_emulator/sync                  run one sync tick now; its counts
POST        /_emulator/reset                 faults, throttle, settings, counters back to start; state
                                             rebuilt from the seed file and the directory
GET/PUT     /_emulator/faults                read / merge fault settings (see faults.py); DELETE clears
GET/PUT     /_emulator/throttle              ``{"rate": r, "burst": b}``; rate null or 0 turns it off
GET/PUT     /_emulator/settings              behaviour switches (see config.Settings)
GET         /_emulator/counters              requests served, 429s sent, by status and cmdlet
GET/PUT     /_emulator/organization          Graph's organization; PUT ``onPremisesLastSyncDateTime`` (ISO 8601
                                             or null) / ``onPremisesSyncEnabled`` (true, false, null: derived)
GET/POST    /_emulator/mailboxes             every raw record / create one (cloud-only by default)
GET/PATCH   /_emulator/mailboxes/{identity}  one raw record / overwrite properties, bypassing all rules
DELETE      /_emulator/mailboxes/{identity}  remove a mailbox
POST        /_emulator/tokens                mint an access token: ``{"client": "secret", "lifetime": s,
                                             "audience": aud, "claims": {...}}`` (e.g. a negative lifetime:
                                             already expired; audience https://graph.microsoft.com for Graph)
POST        /_emulator/tokens/revoke         refuse every access token issued so far (401 on next use)
POST        /_emulator/licenses              license a user synced under the tenant default: ``{"user": upn or
                                             object id}``; Exchange creates its cloud-managed mailbox
                                             (organization.py)
==========  ===============================  ==============================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ldap3.core.exceptions import LDAPException

from . import addresses
from .config import EXCHANGE_RESOURCE
from .errors import ExchangeError
from .mailboxes import ADMIN_FIELDS, coerce_dates, exchange_dn, from_properties
from .materials import constant_time_equal
from .organization import license_user
from .state import to_json
from .web import Request, Response, json_response

if TYPE_CHECKING:
    from .server import Emulator


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


class AdminApi:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def handle(self, request: Request, parts: list[str]) -> Response:
        token = request.headers.get("x-emulator-admin-token") or request.headers.get("authorization", "").removeprefix(
            "Bearer "
        )
        if not token or not constant_time_equal(token, self.emulator.materials.admin_token):
            return _error(401, "admin token missing or wrong")
        try:
            body = request.json() if request.body else {}
        except ValueError:
            return _error(400, "body is not JSON")
        try:
            return self._route(request.method, parts, body or {})
        except ValueError as exc:
            return _error(400, str(exc))
        except ExchangeError as exc:
            return _error(exc.status, exc.text)

    def _route(self, method: str, parts: list[str], body: dict[str, Any]) -> Response:
        emulator = self.emulator
        route = parts[0] if parts else "health"
        if route == "health" and method == "GET":
            return json_response(200, {"ok": True, "mailboxes": len(emulator.state)})
        if route == "sync" and method == "POST":
            try:
                return json_response(200, emulator.tick())
            except (OSError, LDAPException) as exc:
                return _error(502, f"sync failed, directory not readable: {type(exc).__name__}: {exc}")
        if route == "reset" and method == "POST":
            return json_response(200, emulator.reset())
        if route == "faults":
            if method in ("PUT", "POST", "PATCH"):
                emulator.faults.update(body)
            elif method == "DELETE":
                emulator.faults.clear()
            return json_response(200, emulator.faults.describe())
        if route == "throttle":
            if method in ("PUT", "POST", "PATCH"):
                rate = body.get("rate", emulator.throttle.rate)
                emulator.throttle.configure(
                    None if rate is None else float(rate), int(body.get("burst", emulator.throttle.burst))
                )
            return json_response(200, emulator.throttle.describe())
        if route == "settings":
            if method in ("PUT", "POST", "PATCH"):
                emulator.settings.update(body)
            return json_response(200, emulator.settings.as_dict())
        if route == "organization":
            if method in ("PUT", "POST", "PATCH"):
                emulator.organization.update(body)
            return json_response(200, emulator.organization.record())
        if route == "counters" and method == "GET":
            return json_response(200, emulator.counters_snapshot())
        if route == "mailboxes":
            return self._mailboxes(method, parts[1] if len(parts) > 1 else None, body)
        if route == "licenses" and method == "POST":
            if not isinstance(body.get("user"), str) or not body["user"].strip():
                raise ValueError('give the user to license as {"user": "<upn or object id>"}')
            record = license_user(emulator.state, emulator.tenant, body["user"], add_moera=emulator.settings.add_moera)
            return json_response(201, to_json(record))
        if route == "tokens" and parts[1:] == ["revoke"] and method == "POST":
            return json_response(200, {"revoked": emulator.entra.revoke_issued_tokens()})
        if route == "tokens" and method == "POST":
            client = emulator.materials.clients.get(body.get("client", "secret"))
            if client is None:
                return _error(400, f"unknown client kind {body.get('client')!r}")
            token = emulator.entra.app_token(
                client,
                lifetime=int(body.get("lifetime", 3600)),
                audience=body.get("audience") or EXCHANGE_RESOURCE,
                extra=body.get("claims"),
            )
            return json_response(200, {"access_token": token})
        return _error(404, f"no admin route {method} /_emulator/{'/'.join(parts)}")

    def _mailboxes(self, method: str, identity: str | None, body: dict[str, Any]) -> Response:
        emulator = self.emulator
        state = emulator.state
        if identity is None:
            if method == "GET":
                with state.lock:
                    records = [to_json(record) for record, _meta in state.records()]
                return json_response(200, {"value": records})
            if method == "POST":
                record = from_properties(body, emulator.tenant, add_moera=emulator.settings.add_moera)
                with state.lock:
                    self._check_unique(record)
                    state.add(record)
                return json_response(201, to_json(record))
            return _error(405, "use GET or POST")
        with state.lock:
            guids = state.resolve(identity)
            if len(guids) != 1:
                return _error(404 if not guids else 409, f"{len(guids)} mailboxes match {identity!r}")
            record = state.get(guids[0])
            if method == "GET":
                return json_response(200, to_json(record))
            if method == "DELETE":
                state.remove(record["Guid"])
                return json_response(200, to_json(record))
            if method in ("PATCH", "PUT"):
                updated = self._patched(record, body)
                state.replace(record["Guid"], updated)
                return json_response(200, to_json(updated))
        return _error(405, "use GET, PATCH or DELETE")

    def _patched(self, record: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - ADMIN_FIELDS - {"DistinguishedName"}
        if unknown:
            raise ValueError(f"unknown mailbox properties: {', '.join(sorted(unknown))}")
        updated = {**record, **body}
        if "EmailAddresses" in body:
            updated["EmailAddresses"] = addresses.full_list(body["EmailAddresses"])
            primary = addresses.primary_of(updated["EmailAddresses"])
            if "PrimarySmtpAddress" not in body:
                updated["PrimarySmtpAddress"] = primary
            if "WindowsEmailAddress" not in body:
                updated["WindowsEmailAddress"] = primary
        if "Name" in body and "DistinguishedName" not in body:
            updated["DistinguishedName"] = exchange_dn(body["Name"], self.emulator.tenant)
        return coerce_dates(updated)

    def _check_unique(self, record: dict[str, Any]) -> None:
        for value in record["EmailAddresses"]:
            if self.emulator.state.proxy_holders(addresses.key_of(value)):
                raise ExchangeError(409, "", f"the proxy address {value!r} is already used by another mailbox")
