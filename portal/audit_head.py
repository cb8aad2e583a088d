"""Publishing the audit chain's head outside the database, and reading the published heads back.

A head is the newest event's id and hash, how many events lead up to it, the first keyed event's id and the chain
key's public id, with the time it was published. It goes to AUDIT_HEAD_FILE (opened for appending only, one JSON line
per head, never rewritten) and/or to syslog (AUDIT_HEAD_SYSLOG), places an SQL statement cannot reach. ``audit_verify``
then checks the chain against every head in the file: an event a head names must still be there with the same hash
and the same number of events before it, which is how deleting the newest events or all of them is found.

Only a verified chain is published: ``audit_verify`` publishes after a clean full verification, and the periodic job
(writeback.jobs.audit) recomputes the events since the last head first, so a truncation made between two
publications is reported instead of being published as the new head.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from portal.audit_chain import GENESIS_HASH, ChainReport, chain_key, key_id, verify_chain

logger = logging.getLogger(__name__)
SYSLOG_TAG = "soa-portal-audit-head: "
_PRIORITY = 4 * 8 + 6  # facility auth, severity info


class HeadError(RuntimeError):
    """The head cannot be published (the chain does not verify), or the published heads cannot be read."""


@dataclass(frozen=True)
class PublishedHead:
    """One publication: the chain's newest event when it was published, and what led up to it."""

    published_at: str
    head_id: int
    head_hash: str
    count: int
    keyed_from: int | None
    key_id: str | None

    @classmethod
    def from_report(cls, report: ChainReport) -> PublishedHead:
        return cls(
            published_at=timezone.now().isoformat(timespec="seconds"),
            head_id=report.last_id or 0,
            head_hash=report.last_hash or GENESIS_HASH,
            count=report.checked,
            keyed_from=report.keyed_from,
            key_id=key_id(chain_key()),
        )

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def head_file() -> Path | None:
    path = settings.AUDIT_HEAD_FILE
    return Path(path) if path else None


def read_heads(path: Path | None = None) -> list[PublishedHead]:
    """The heads in ``path`` (default AUDIT_HEAD_FILE), oldest first; [] when there is no such file yet. Accepts the
    file's own lines and syslog lines (anything before the JSON object is skipped), so a syslog archive can be given
    to ``audit_verify --heads``."""
    path = path or head_file()
    if path is None or not path.exists():
        return []
    heads = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data, _end = json.JSONDecoder().raw_decode(line, line.index("{"))
                heads.append(PublishedHead(**{field: data[field] for field in PublishedHead.__dataclass_fields__}))
            except (ValueError, KeyError, TypeError) as exc:
                raise HeadError(f"{path}, line {number}, is not a published audit head ({exc}).") from exc
    return heads


def publish_head(report: ChainReport) -> tuple[PublishedHead, list[str]]:
    """Publish the head a clean verification ended at, to every configured place. Returns the head and where it went
    (empty when neither AUDIT_HEAD_FILE nor AUDIT_HEAD_SYSLOG is set)."""
    if report.broken is not None:
        raise HeadError(f"A broken chain is not published (event #{report.broken.event_id}: {report.broken.reason}).")
    head = PublishedHead.from_report(report)
    places = []
    path = head_file()
    if path is not None:
        try:
            _append(path, head.line())
        except OSError as exc:
            raise HeadError(f"The audit head could not be appended to AUDIT_HEAD_FILE {path}: {exc}.") from exc
        places.append(str(path))
    if settings.AUDIT_HEAD_SYSLOG:
        try:
            _syslog(settings.AUDIT_HEAD_SYSLOG, head.line())
        except (OSError, ValueError) as exc:
            raise HeadError(f"The audit head could not be sent to AUDIT_HEAD_SYSLOG {settings.AUDIT_HEAD_SYSLOG}: "
                            f"{exc}.") from exc  # fmt: skip
        places.append(f"syslog {settings.AUDIT_HEAD_SYSLOG}")
    logger.info("Published audit head #%s (%s events) to %s.", head.head_id, head.count, ", ".join(places) or "nowhere")
    return head, places


def publish_verified_head() -> tuple[PublishedHead, list[str]]:
    """Verify the events since the last published head (all of them when none was published), then publish the new
    head. Raises HeadError, publishing nothing, when the chain does not hold."""
    heads = read_heads()
    report = verify_chain(since=heads[-1] if heads else None)
    if report.broken is not None:
        raise HeadError(
            f"The audit chain does not verify since the last published head, so no head was published: event "
            f"#{report.broken.event_id}: {report.broken.reason}. Run manage.py audit_verify."
        )
    return publish_head(report)


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND: every write lands at the end whatever else holds the file, and nothing here can seek back. The file
    # may also be made append-only for this user (chattr +a), which still allows this.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _syslog(target: str, line: str) -> None:
    """One datagram in the syslog format (RFC 3164 without a header: the receiving daemon stamps it), sent here rather
    than through logging's SysLogHandler, which reports a failed send on stderr and goes on."""
    message = f"<{_PRIORITY}>{SYSLOG_TAG}{line}".encode()
    if target.startswith("/"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            sock.send(message)
        return
    host, _, port = target.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(message, (host or "localhost", int(port or 514)))
