"""The small HTTP vocabulary shared by the emulator's handlers: requests in, responses out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    """One parsed HTTP request; header names are lower case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
        parts = urlsplit(target)
        return cls(method, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), headers, body)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(
    status: int, payload: Any, *, headers: dict[str, str] | None = None, content_type: str = ""
) -> Response:
    content_type = content_type or "application/json; charset=utf-8"
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(status, body, {"Content-Type": content_type, **(headers or {})})


def html_response(status: int, html: str, *, headers: dict[str, str] | None = None) -> Response:
    return Response(status, html.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8", **(headers or {})})


def redirect(location: str) -> Response:
    return Response(302, b"", {"Location": location})


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback_url(url: str) -> bool:
    """The emulator only ever sends browsers back to this machine."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS
