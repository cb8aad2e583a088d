"""Microsoft Graph, as much as the portal needs, on the emulator's HTTPS server: users, their groups, and the
organization (graph_organization.py: the tenant's on-premises sync properties).

Follows Microsoft's documentation of the v1.0 API:

- Auth: an access token from the tenant's token endpoint for ``https://graph.microsoft.com/.default`` (audience
  ``https://graph.microsoft.com``). An app-only token must carry one of the application permissions that allow
  listing users (User.Read.All is the least privileged; User.ReadWrite.All, Directory.Read.All and
  Directory.ReadWrite.All also do), else 403 ``Authorization_RequestDenied``; a missing, expired or foreign
  token gets 401 ``InvalidAuthenticationToken`` (Learn "List users", "Microsoft Graph error responses").
- ``$select``: only the properties named come back, unknown names are a 400 ("Parsing OData Select and Expand
  failed: Could not find a property named 'x' on type 'microsoft.graph.user'."); without it the default set
  (businessPhones, displayName, givenName, id, jobTitle, mail, mobilePhone, officeLocation, preferredLanguage,
  surname, userPrincipalName).
- ``$top``: 1 to 999, default page 100 (Learn "Paging Microsoft Graph data"; "Invalid page size specified: '1000'.
  Must be between 1 and 999 inclusive."). More items give an absolute ``@odata.nextLink`` carrying the query and a
  ``$skiptoken``; ``@odata.context`` names the entity set and the selection.
- ``POST /v1.0/users/{id}/getMemberObjects`` with ``{"securityEnabledOnly": bool}``: the ids of the groups the
  user is a member of, ``{"@odata.context": ".../$metadata#Collection(Edm.String)", "value": [...]}``, for a
  signed-in person (the demo identities: all their groups are security groups) or a synced user (none). Learn "user:
  getMemberObjects": application permission User.ReadBasic.All with GroupMember.Read.All, or User.Read.All and the
  broader ones; a missing securityEnabledOnly is a 400, an unknown id a 404 Request_ResourceNotFound. This is where
  a client reads the groups of a token with the groups overage indication.
- Errors: ``{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}``.

The listing holds the Entra users Entra Connect made from AD (entra_users.py), then the cloud-only users behind the
tenant's mailboxes that are not dir-synced (onPremisesSyncEnabled null). Other query options ($filter, $search,
$orderby, $count, $expand, $skip) are refused with a 400 rather than ignored.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any
from urllib.parse import urlencode

from .config import GRAPH_AUDIENCE, GRAPH_RESOURCE
from .entra import Entra, TokenRejected
from .entra_users import EntraUsers
from .graph_organization import READ_ORGANIZATION, Organization
from .state import TenantState, format_date
from .web import Request, Response, json_response

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 999
# Application permissions that let an app list users (Learn "List users", permissions table).
READ_USERS = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
DEFAULT_SELECT = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone", "officeLocation",
    "preferredLanguage", "surname", "userPrincipalName", "id",
)  # fmt: skip
# Properties of microsoft.graph.user (v1.0) a $select may name; those the emulator holds no value for are null.
COLLECTIONS = ("businessPhones", "imAddresses", "otherMails", "proxyAddresses", "identities")
PROPERTIES = (
    "id", "accountEnabled", "ageGroup", "businessPhones", "city", "companyName", "country", "createdDateTime",
    "creationType", "deletedDateTime", "department", "displayName", "employeeHireDate", "employeeId",
    "employeeType", "externalUserState", "faxNumber", "givenName", "identities", "imAddresses", "isResourceAccount",
    "jobTitle", "lastPasswordChangeDateTime", "mail", "mailNickname", "mobilePhone", "officeLocation",
    "onPremisesDistinguishedName", "onPremisesDomainName", "onPremisesImmutableId", "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName", "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName", "otherMails", "passwordPolicies", "postalCode", "preferredDataLocation",
    "preferredLanguage", "proxyAddresses", "securityIdentifier", "showInAddressList", "state", "streetAddress",
    "surname", "usageLocation", "userPrincipalName", "userType",
)  # fmt: skip
_CANONICAL = {name.lower(): name for name in PROPERTIES}
_UNSUPPORTED = ("$filter", "$search", "$orderby", "$count", "$expand", "$skip")


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _token(phase: int, after: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"p": phase, "a": after}).encode()).decode().rstrip("=")


def cloud_only_user(record: dict[str, Any]) -> dict[str, Any]:
    """The Entra user behind a cloud-only mailbox: no on-premises side."""
    return {
        "id": record["ExternalDirectoryObjectId"],
        "userPrincipalName": record["UserPrincipalName"],
        "displayName": record["DisplayName"],
        "mail": record["PrimarySmtpAddress"],
        "mailNickname": record["Alias"],
        "proxyAddresses": list(record["EmailAddresses"]),
        "accountEnabled": True,
        "userType": "Member",
        "createdDateTime": format_date(record["WhenCreatedUTC"]),
        "onPremisesSyncEnabled": None,
    }


class GraphApi:
    """``/v1.0/...`` of one tenant."""

    def __init__(
        self,
        *,
        entra: Entra,
        users: EntraUsers,
        state: TenantState,
        base_url: str,
        organization: Organization | None = None,
    ) -> None:
        self.entra, self.users, self.state, self.base_url = entra, users, state, base_url
        self.organization = organization

    def handle(self, request: Request, parts: list[str]) -> Response:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or request_id
        headers = {"request-id": request_id, "client-request-id": client_request_id}
        try:
            lowered = [p.lower() for p in parts]
            if lowered == ["organization"]:
                self._authenticate(request, allowed=READ_ORGANIZATION)
                payload = self._organization(request)
                return json_response(
                    200, payload, headers=headers, content_type="application/json;odata.metadata=minimal;charset=utf-8"
                )
            claims = self._authenticate(request)
            if len(parts) == 3 and lowered[0] == "users" and lowered[2] == "getmemberobjects":
                if request.method != "POST":
                    raise GraphError(405, "Request_BadRequest", f"The HTTP method '{request.method}' is not allowed.")
                payload = self._member_objects(request, parts[1], claims)
            elif lowered != ["users"]:
                segment = parts[0] if parts else ""
                raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
            elif request.method != "GET":
                raise GraphError(405, "Request_BadRequest", f"The HTTP method '{request.method}' is not allowed.")
            else:
                payload = self._list_users(request)
        except GraphError as exc:
            body = {
                "error": {
                    "code": exc.code,
                    "message": exc.message,
                    "innerError": {
                        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                        "request-id": request_id,
                        "client-request-id": client_request_id,
                    },
                }
            }
            return json_response(exc.status, body, headers={**headers, **exc.headers})
        return json_response(
            200, payload, headers=headers, content_type="application/json;odata.metadata=minimal;charset=utf-8"
        )

    def _organization(self, request: Request) -> dict[str, Any]:
        if request.method != "GET":
            raise GraphError(405, "Request_BadRequest", f"The HTTP method '{request.method}' is not allowed.")
        if self.organization is None:
            raise GraphError(400, "BadRequest", "Resource not found for the segment 'organization'.")
        try:
            select = self.organization.select(request.query.get("$select"))
        except ValueError as exc:
            raise GraphError(
                400,
                "BadRequest",
                f"Parsing OData Select and Expand failed: Could not find a property named '{exc}' on type "
                "'microsoft.graph.organization'.",
            ) from None
        return self.organization.listing(self.base_url, select)

    def _authenticate(self, request: Request, *, allowed: frozenset[str] = READ_USERS) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = {
            "WWW-Authenticate": f'Bearer realm="", authorization_uri="{self.entra.authority}/oauth2/authorize", '
            f'client_id="{GRAPH_RESOURCE}"'
        }
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        try:
            claims = self.entra.verify_access_token(token.strip(), audience=GRAPH_AUDIENCE)
        except TokenRejected as exc:
            raise GraphError(401, "InvalidAuthenticationToken", str(exc), challenge) from None
        if not allowed & (set(claims.get("roles") or []) | set(claims.get("scp", "").split())):
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        return claims

    def _member_objects(self, request: Request, object_id: str, claims: dict[str, Any]) -> dict[str, Any]:
        granted = set(claims.get("roles") or []) | set(claims.get("scp", "").split())
        if not (READ_USERS & granted or {"User.ReadBasic.All", "GroupMember.Read.All"} <= granted):
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        try:
            body = request.json() if request.body else {}
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("securityEnabledOnly"), bool):
            raise GraphError(
                400, "Request_BadRequest", "The request body must hold the Boolean parameter 'securityEnabledOnly'."
            )
        person = next((p for p in self.entra.identities if p["oid"].lower() == object_id.lower()), None)
        if person is None and self.users.get(object_id) is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not "
                "present.",
            )
        groups = list(person.get("groups", [])) if person else []
        return {"@odata.context": f"{self.base_url}/v1.0/$metadata#Collection(Edm.String)", "value": groups}

    def _list_users(self, request: Request) -> dict[str, Any]:
        query = request.query
        for option in _UNSUPPORTED:
            if option in query:
                raise GraphError(
                    400, "Request_UnsupportedQuery", f"The emulator does not implement '{option}' on /users."
                )
        select = self._select(query.get("$select"))
        top = self._top(query.get("$top"))
        phase, after = self._position(query.get("$skiptoken"))
        items: list[dict[str, Any]] = []
        more = False
        if phase == 1:
            items, after, more = self.users.page(after, top)
            if not more:
                phase, after = 2, 0
        if phase == 2:
            # Cloud-only users come after the synced ones; a full page stops at the first one left over.
            with self.state.lock:
                for record, meta in self.state.records(after):
                    if record["IsDirSynced"]:
                        continue
                    if len(items) >= top:
                        more = True
                        break
                    items.append(cloud_only_user(record))
                    after = meta.seq
        shown = select or DEFAULT_SELECT
        context = f"{self.base_url}/v1.0/$metadata#users" + (f"({','.join(select)})" if select else "")
        payload: dict[str, Any] = {"@odata.context": context}
        if more:
            link_query = {k: v for k, v in query.items() if k != "$skiptoken"}
            link_query["$skiptoken"] = _token(phase, after)
            payload["@odata.nextLink"] = f"{self.base_url}/v1.0/users?{urlencode(link_query)}"
        payload["value"] = [{name: _value(user, name) for name in shown} for user in items]
        return payload

    @staticmethod
    def _select(text: str | None) -> list[str]:
        if text is None:
            return []
        chosen: list[str] = []
        for part in text.split(","):
            name = part.strip()
            canonical = _CANONICAL.get(name.lower())
            if canonical is None:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Parsing OData Select and Expand failed: Could not find a property named '{name}' on type "
                    "'microsoft.graph.user'.",
                )
            if canonical not in chosen:
                chosen.append(canonical)
        return chosen

    @staticmethod
    def _top(text: str | None) -> int:
        if text is None:
            return DEFAULT_PAGE_SIZE
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_PAGE_SIZE:
            raise GraphError(
                400,
                "Request_BadRequest",
                f"Invalid page size specified: '{text}'. Must be between 1 and {MAX_PAGE_SIZE} inclusive.",
            )
        return value

    @staticmethod
    def _position(token: str | None) -> tuple[int, int]:
        if token is None:
            return 1, 0
        try:
            position = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            phase, after = int(position["p"]), int(position["a"])
        except (ValueError, KeyError, TypeError):
            raise GraphError(400, "Request_BadRequest", "The specified page token value has expired.") from None
        if phase not in (1, 2):
            raise GraphError(400, "Request_BadRequest", "The specified page token value has expired.")
        return phase, after


def _value(user: dict[str, Any], name: str) -> Any:
    value = user.get(name)
    if value is None and name in COLLECTIONS:
        return []
    return value
