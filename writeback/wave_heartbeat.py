"""The heartbeat of a running wave batch: what lets a dead worker be found in seconds.

While a batch job runs, a thread of its own writes ``heartbeat_at`` on the members the batch still holds every
WAVE_HEARTBEAT_SECONDS. It beats through a Set-Mailbox that Exchange holds for a long time (throttling, a slow
tenant), so a slow flip is not taken for a dead worker; and it dies with the process, so a SIGKILLed worker (or work
horse) stops beating at once. Every worker looks for members whose heartbeat is older than WAVE_STALE_SECONDS
(writeback.jobs.waves.wave_watch) and returns them, so a wave waits seconds for a dead worker, not the sweep's
minutes.

The thread has its own database connection (Django's are per thread) and closes it when the batch ends.
"""

from __future__ import annotations

import logging
import threading
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from soa.choices import MemberState
from soa.models import WaveMember

logger = logging.getLogger(__name__)


def beat(members: list[WaveMember]) -> int:
    """Say the batch holding ``members`` is alive: only rows still held by this claim (RUNNING since the batch
    stamped them), so a member swept and claimed by another worker is never kept alive by this one."""
    held = [Q(pk=member.pk, started_at=member.started_at) for member in members]
    if not held:
        return 0
    return WaveMember.objects.filter(reduce(or_, held), state=MemberState.RUNNING).update(heartbeat_at=timezone.now())


class MemberHeartbeat:
    """``with MemberHeartbeat(members):`` beats for ``members`` from a thread until the block ends."""

    def __init__(self, members: list[WaveMember], every: float | None = None) -> None:
        self.members = members
        self.every = float(settings.WAVE_HEARTBEAT_SECONDS if every is None else every)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wave-heartbeat", daemon=True)

    def __enter__(self) -> MemberHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=max(self.every * 2, 5.0))

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    beat(list(self.members))
                except DatabaseError as error:
                    # A missed beat is not the batch's failure: the flips record their own results, and only
                    # several missed beats in a row make the members look dead.
                    logger.warning("Wave heartbeat not written: %s", error)
                except Exception:
                    # A thread that ended here would make a live batch look dead, its members taken from under it.
                    logger.exception("Wave heartbeat not written")
        finally:
            connection.close()
