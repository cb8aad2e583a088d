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
GET/POST    /_emulator/mailboxes             every raw record / create one (cloud-only by default); GET
                                             ``?fields=A,B``: only those properties of each
PATCH       /_emulator/mailboxes             ``{"value": [{"Identity": id, property: value...}...]}``: each as
                                             PATCH /_emulator/mailboxes/{identity}, all or none, each mailbox
                                             once; ``{"updated": N}``
POST        /_emulator/mailboxes/lookup      ``{"identities": [...], "fields": [...]}``: those raw records, in
                                             that order (fields optional); 404/409 as for one identity
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
            return self._route(request.method, parts, body or {}, request.query)
        except ValueError as exc:
            return _error(400, str(exc))
        except ExchangeError as exc:
            return _error(exc.status, exc.text)

    def _route(self, method: str, parts: list[str], body: dict[str, Any], query: dict[str, str]) -> Response:
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
        if route == "mailboxes" and parts[1:] == ["lookup"] and method == "POST":
            return self._lookup(body)
        if route == "mailboxes":
            return self._mailboxes(method, parts[1] if len(parts) > 1 else None, body, query)
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

    def _mailboxes(self, method: str, identity: str | None, body: dict[str, Any], query: dict[str, str]) -> Response:
        emulator = self.emulator
        state = emulator.state
        if identity is None:
            if method == "GET":
                fields = _fields(query.get("fields"))
                with state.lock:
                    records = [_project(record, fields) for record, _meta in state.records()]
                return json_response(200, {"value": records})
            if method == "PATCH":
                return self._patch_many(body)
            if method == "POST":
                record = from_properties(body, emulator.tenant, add_moera=emulator.settings.add_moera)
                with state.lock:
                    self._check_unique(record)
                    state.add(record)
                return json_response(201, to_json(record))
            return _error(405, "use GET, POST or PATCH")
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

    def _patch_many(self, body: dict[str, Any]) -> Response:
        """Many PATCHes in one request (seeding a large tenant): each exactly as the one-identity PATCH, and none
        applied unless every identity is found once and every change is valid. Every identity is resolved before any
        change is applied, so a batch names each mailbox once."""
        changes = body.get("value")
        if not isinstance(changes, list) or not all(isinstance(c, dict) and "Identity" in c for c in changes):
            raise ValueError('give the changes as {"value": [{"Identity": ..., property: value...}...]}')
        state = self.emulator.state
        with state.lock:
            updated: dict[str, dict[str, Any]] = {}
            for change in changes:
                record = self._one(str(change["Identity"]))
                if record["Guid"] in updated:
                    raise ValueError(f"{change['Identity']!r} names a mailbox the batch already changes")
                props = {key: value for key, value in change.items() if key != "Identity"}
                updated[record["Guid"]] = self._patched(record, props)
            for record in updated.values():
                state.replace(record["Guid"], record)
        return json_response(200, {"updated": len(updated)})

    def _lookup(self, body: dict[str, Any]) -> Response:
        identities = body.get("identities")
        if not isinstance(identities, list):
            raise ValueError('give the mailboxes as {"identities": [...], "fields": [...]}')
        fields = body.get("fields")
        if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
            raise ValueError("fields is a list of property names")
        with self.emulator.state.lock:
            records = [_project(self._one(str(identity)), fields) for identity in identities]
        return json_response(200, {"value": records})

    def _one(self, identity: str) -> dict[str, Any]:
        guids = self.emulator.state.resolve(identity)
        if len(guids) != 1:
            raise ExchangeError(404 if not guids else 409, "", f"{len(guids)} mailboxes match {identity!r}")
        return self.emulator.state.get(guids[0])

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


def _fields(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def _project(record: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """The raw record as JSON, or only ``fields`` of it: a tenant-wide listing of whole records is too big to hold at a
    million mailboxes."""
    if fields is None:
        return to_json(record)
    return to_json({name: record[name] for name in fields if name in record})
