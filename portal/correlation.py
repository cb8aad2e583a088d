"""The correlation id that ties log lines and audit events to one request or one background job.

The request-id middleware sets it for a web request; a job sets it to its RQ job id. audit_record() and the
log filter read it from here, so neither needs the request passed down through services.
"""

import contextvars
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

_current: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")

# A client may send its own id (a load balancer's, a test's); anything else is replaced, because the id
# ends up in logs and in the audit chain and must not carry arbitrary text.
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def sanitize(candidate: str | None) -> str:
    """Return the candidate when it is a well-formed id, otherwise a fresh one."""
    if candidate and _ACCEPTABLE.match(candidate):
        return candidate
    return new_correlation_id()


def get_correlation_id() -> str:
    return _current.get()


@contextmanager
def correlation_scope(correlation_id: str) -> Iterator[str]:
    """Run a block (a request, a job) under the given id, restoring the previous one afterwards."""
    token = _current.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _current.reset(token)


class CorrelationIdFilter(logging.Filter):
    """Adds ``correlation_id`` to every log record so formatters can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _current.get() or "-"
        return True
