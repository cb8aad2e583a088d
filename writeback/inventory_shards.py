"""A full import spread over several workers: its directory pass split by OU subtree (INVENTORY_WORKERS above 1).

The worker that claimed the run is its coordinator. It records the directory's change mark, splits the tree into
parts (``plan_shards``: an OU's own users, or a whole subtree), queues INVENTORY_WORKERS - 1 helper jobs
(``inventory_shard_job``) and reads Exchange Online as a serial import does, into its local spool, from which it
copies each page into the database (``SharedSpool``, one InventoryObject row per Get-Mailbox object, as JSON). Every
worker taking part, the coordinator included, claims one part at a time (InventoryShard, QUEUED -> RUNNING -> DONE)
and runs the serial import's directory pass over it (``writeback.inventory.directory_pass``), taking from the
database the objects its users name, so most pairs are still written once. When no part is left, the coordinator
waits for the parts others hold, queues again a part whose worker stopped beating (and does it itself), then runs
the Graph and Exchange passes over what nobody took and settles the run, as a serial import does.

Two users in different parts can meet only over one Exchange object (or a user moved between parts during the
read); the page that loses the race fails its transaction, and is merged again, seeing the other part's rows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import ldap3
from django.conf import settings
from django.core import checks
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from soa.jobs import INVENTORY_JOB_TIMEOUT, INVENTORY_SHARD_JOB, enqueue
from writeback.directory import AD_USER_FILTER, DirectoryClient, DirectoryConfig, DirectoryRetryable
from writeback.exchange import ExchangeOnlineClient, GraphClient
from writeback.inventory import (
    PAGE_SIZE,
    InventoryError,
    _pages,
    ad_attributes,
    directory_pass,
    exchange_parameters,
    exchange_pass,
    exchange_spool,
    graph_pass,
    heartbeat,
    import_ad_page,
)
from writeback.inventory_ad import formatted
from writeback.jobs.lifecycle import RunAbandoned
from writeback.models import InventoryObject, InventoryRun, InventoryShard
from writeback.read_ahead import Held, ReadAhead, Spool
from writeback.rows import insert_values

logger = logging.getLogger(__name__)

# Parts per worker: enough that a worker done early finds more to do while a large OU keeps another busy.
SHARDS_PER_WORKER = 4
# AD's structure rules put a user only below an instance of a class that the user class's possSuperiors or
# systemPossSuperiors name, its superclasses' included (MS-ADTS 3.1.1.2.4.2, "Structure Rules"); in the default
# schema, these. The split descends only through them, so every user is in exactly one part: the own users of a
# split entry, or below one of its children of these classes.
USER_PARENT_CLASSES = ("organizationalUnit", "container", "builtinDomain", "lostAndFound", "domainDNS", "organization")
_CHILD_FILTER = "(|" + "".join(f"(objectClass={name})" for name in USER_PARENT_CLASSES) + ")"
_MERGE_ATTEMPTS = 4
_BEAT_SECONDS = 2.0
_WAIT_SECONDS = 0.2
_SQL_VARIABLES = 900


def plan_shards(directory: DirectoryClient, base_dn: str, wanted: int) -> list[tuple[str, str]]:
    """Split ``base_dn``'s users into at least ``wanted`` parts where the tree allows, breadth first: an entry split
    gives the part of its own users (one level) and a part per child that may hold users (its subtree)."""
    parts: list[tuple[str, str]] = []
    pending = deque([base_dn])
    while pending:
        dn = pending.popleft()
        if len(parts) + len(pending) + 1 >= wanted:
            parts.append((InventoryShard.Scope.SUBTREE, dn))
            continue
        children = [e["dn"] for e in directory.paged_search(dn, _CHILD_FILTER, ["objectClass"], scope=ldap3.LEVEL)]
        if not children:
            parts.append((InventoryShard.Scope.SUBTREE, dn))
            continue
        parts.append((InventoryShard.Scope.LEVEL, dn))
        pending.extend(children)
    return parts


def _pack(item: dict[str, Any]) -> bytes:
    # JSON, not pickle: the rows are read back by other processes from a table, and must only ever be parsed.
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()


def _chunks(keys: Iterable[bytes]) -> Iterator[list[bytes]]:
    wanted = list(dict.fromkeys(keys))
    for start in range(0, len(wanted), _SQL_VARIABLES):
        yield wanted[start : start + _SQL_VARIABLES]


class SharedSpool:
    """A spread import's Get-Mailbox objects in the database, with a Spool's questions (``take``, ``has``,
    ``finished``, ``taken``). Given the coordinator's local spool, ``publish`` copies what it has read since."""

    def __init__(self, run_id: int, local: Spool | None = None):
        self.run_id = run_id
        self._local = local
        self._seq = 0
        self._finished = False
        self.taken = 0
        self.published = 0

    def publish(self) -> None:
        """Copy the pages the local spool read since the last call; mark the run once the read is over."""
        if self._local is None or self._finished:
            return
        rows = self._local.drain()
        if rows:
            values = []
            for key, data in rows:
                self._seq += 1
                values.append((self.run_id, self._seq, key, data, False))
            insert_values(InventoryObject, ["run", "seq", "key", "data", "taken"], values)
            self.published += len(values)
        elif rows is None:
            InventoryRun.objects.filter(pk=self.run_id).update(exchange_read_at=timezone.now())
            self._finished = True

    @property
    def finished(self) -> bool:
        """Whether every object the Exchange read will give is in the table."""
        if not self._finished:
            if self._local is not None:
                self.publish()
            else:
                self._finished = InventoryRun.objects.filter(pk=self.run_id, exchange_read_at__isnull=False).exists()
        return self._finished

    def has(self, keys: Iterable[bytes]) -> set[bytes]:
        table = connection.ops.quote_name(InventoryObject._meta.db_table)
        found: set[bytes] = set()
        with connection.cursor() as cursor:
            for chunk in _chunks(keys):
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(f"SELECT DISTINCT key FROM {table} WHERE run_id = %s AND key IN ({marks})",  # noqa: S608
                               [self.run_id, *chunk])  # fmt: skip
                found.update(bytes(key) for (key,) in cursor.fetchall())
        return found

    def take(self, keys: Iterable[bytes]) -> dict[bytes, list[dict[str, Any]]]:
        """The objects read so far under ``keys``, marked taken in the caller's transaction: a page whose
        transaction fails gives them back."""
        table = connection.ops.quote_name(InventoryObject._meta.db_table)
        rows = []
        with connection.cursor() as cursor:
            for chunk in _chunks(keys):
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(
                    f"UPDATE {table} SET taken = %s WHERE run_id = %s AND NOT taken AND key IN ({marks}) "  # noqa: S608
                    "RETURNING seq, key, data",
                    [True, self.run_id, *chunk],
                )
                rows.extend(cursor.fetchall())
        rows.sort(key=lambda row: row[0])
        found: dict[bytes, list[dict[str, Any]]] = {}
        for _, key, data in rows:
            found.setdefault(bytes(key), []).append(json.loads(bytes(data)))
        self.taken += len(rows)
        return found

    def remaining(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """What nobody took, in the order read, ``size`` objects a page (the coordinator's Exchange pass)."""
        last = 0
        objects = InventoryObject.objects.filter(run_id=self.run_id, taken=False).order_by("seq")
        while rows := list(objects.filter(seq__gt=last).values_list("seq", "data")[:size]):
            last = rows[-1][0]
            yield [json.loads(bytes(data)) for _, data in rows]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _Part:
    """A claimed shard and its heartbeat, which stops the work when the shard was taken from this worker."""

    def __init__(self, shard: InventoryShard, run: InventoryRun, also: Callable[[], None]):
        self.shard, self.run, self.also = shard, run, also
        self.beat = time.monotonic()

    def tick(self) -> None:
        self.also()
        if time.monotonic() - self.beat < _BEAT_SECONDS:
            return
        self.beat = time.monotonic()
        mine = InventoryShard.objects.filter(pk=self.shard.pk, state=InventoryShard.State.RUNNING,
                                             claims=self.shard.claims)  # fmt: skip
        if not mine.update(heartbeat_at=timezone.now()):
            raise RunAbandoned(f"Part {self.shard} of import #{self.run.pk} was taken from this worker.")
        if not InventoryRun.objects.filter(pk=self.run.pk, state=InventoryRun.State.RUNNING).exists():
            raise RunAbandoned(f"Import #{self.run.pk} is no longer running.")


def _claim(run: InventoryRun, worker: str) -> InventoryShard | None:
    """The first queued part of ``run``, now RUNNING here; None when none is queued."""
    while True:
        shard = InventoryShard.objects.filter(run=run, state=InventoryShard.State.QUEUED).order_by("pk").first()
        if shard is None:
            return None
        claimed = InventoryShard.objects.filter(pk=shard.pk, state=InventoryShard.State.QUEUED, claims=shard.claims)
        if claimed.update(state=InventoryShard.State.RUNNING, worker=worker, claims=F("claims") + 1,
                          heartbeat_at=timezone.now()):  # fmt: skip
            shard.refresh_from_db()
            return shard


def _merge(run: InventoryRun, page: list, spool: SharedSpool, held: Held | None) -> dt.datetime | None:
    """import_ad_page in one transaction, merged again when another part's page won a race for a row or an object
    (a unique key, a deadlock): nothing of the failed attempt stays, its users put aside included."""
    for attempt in range(1, _MERGE_ATTEMPTS + 1):
        point, taken = (held.savepoint() if held is not None else None), spool.taken
        try:
            with transaction.atomic():
                return import_ad_page(run, page, spool, held)
        except (IntegrityError, OperationalError) as error:
            if held is not None and point is not None:
                held.rollback(point)
            spool.taken = taken
            if attempt == _MERGE_ATTEMPTS:
                raise
            logger.warning("inventory %s: a directory page met another part's write (%s); merging it again",
                           run.pk, error)  # fmt: skip
            time.sleep(0.1 * attempt)
    return None


def _same_server(directory: DirectoryClient, run: InventoryRun) -> None:
    server = directory.server_identity()
    if server != run.ad_server:
        raise DirectoryRetryable(
            f"This worker's directory connection is answered by {server or 'an unnamed server'}, the import's change "
            f"mark is from {run.ad_server or 'an unnamed server'}; run the import again.",
            operation="search",
            target=directory.config.url,
        )


def _run_part(run: InventoryRun, part: _Part, directory: DirectoryClient, spool: SharedSpool) -> None:
    shard = part.shard
    _same_server(directory, run)
    scope = ldap3.SUBTREE if shard.scope == InventoryShard.Scope.SUBTREE else ldap3.LEVEL
    read = 0

    def entries() -> Iterator[dict[str, Any]]:
        nonlocal read
        for entry in directory.paged_search(shard.base_dn, AD_USER_FILTER, ad_attributes(), raw=True, scope=scope):
            read += 1
            yield formatted(entry)

    with ReadAhead(_pages(entries(), PAGE_SIZE), depth=2, name=f"inventory-{run.pk}-part-{shard.pk}") as pages:
        newest = directory_pass(run, pages, spool, None, tick=part.tick, merge=_merge)
    _same_server(directory, run)
    mine = InventoryShard.objects.filter(pk=shard.pk, state=InventoryShard.State.RUNNING, claims=shard.claims)
    if not mine.update(state=InventoryShard.State.DONE, finished_at=timezone.now(), ad_read=read, exo_newest=newest):
        raise RunAbandoned(f"Part {shard} of import #{run.pk} was taken from this worker.")


def take_part(
    run: InventoryRun, directory: DirectoryClient, spool: SharedSpool, *, also: Callable[[], None] = lambda: None
) -> int:
    """Claim and import the run's queued parts one after the other until none is left; returns how many. A part
    that fails is marked FAILED (the coordinator then fails the run) and its error raised."""
    worker, done = worker_name(), 0
    while (shard := _claim(run, worker)) is not None:
        try:
            _run_part(run, _Part(shard, run, also), directory, spool)
        except RunAbandoned:
            raise
        except Exception as error:
            InventoryShard.objects.filter(pk=shard.pk, claims=shard.claims).update(
                state=InventoryShard.State.FAILED, error=f"{type(error).__name__}: {error}"[:4000]
            )
            raise
        done += 1
    return done


def _requeue_stale(run: InventoryRun) -> int:
    """Queue again the parts whose worker stopped beating (killed, or its host gone)."""
    stale = timezone.now() - dt.timedelta(seconds=settings.INVENTORY_SHARD_STALE_SECONDS)
    count = 0
    for shard in InventoryShard.objects.filter(run=run, state=InventoryShard.State.RUNNING, heartbeat_at__lt=stale):
        if InventoryShard.objects.filter(pk=shard.pk, state=InventoryShard.State.RUNNING, claims=shard.claims).update(
            state=InventoryShard.State.QUEUED
        ):
            logger.warning("inventory %s: part %s stopped beating on %s; queued again", run.pk, shard, shard.worker)
            count += 1
    return count


def _wait_for_parts(run: InventoryRun, directory: DirectoryClient, spool: SharedSpool, also: Callable) -> None:
    """Until every part is DONE, taking over any a dead worker left; a FAILED part fails the run."""
    while True:
        also()
        failed = InventoryShard.objects.filter(run=run, state=InventoryShard.State.FAILED).first()
        if failed is not None:
            raise InventoryError(f"Reading {failed} failed on {failed.worker}: {failed.error}")
        if not InventoryShard.objects.filter(run=run).exclude(state=InventoryShard.State.DONE).exists():
            return
        if _requeue_stale(run):
            take_part(run, directory, spool, also=also)
            continue
        time.sleep(_WAIT_SECONDS)


def spread_import(
    run: InventoryRun, *, exchange: ExchangeOnlineClient, directory: DirectoryClient, graph: GraphClient | None
) -> tuple[dt.datetime | None, str | None]:
    """A full import's reads and merges, spread over the workers taking part; returns the newest WhenChangedUTC and
    the directory's change mark, for ``settle``."""
    InventoryShard.objects.filter(run=run).delete()  # an earlier attempt's, when the run was queued again
    InventoryObject.objects.filter(run=run).delete()
    server = directory.server_identity()
    mark = directory.change_mark()
    InventoryRun.objects.filter(pk=run.pk).update(ad_server=server, ad_full_reason="", exchange_read_at=None)
    run.ad_server = server
    parts = plan_shards(directory, settings.LDAP_BASE_DN, settings.INVENTORY_WORKERS * SHARDS_PER_WORKER)
    InventoryShard.objects.bulk_create(InventoryShard(run=run, scope=scope, base_dn=dn) for scope, dn in parts)
    logger.info("inventory %s: the directory is read in %d parts by up to %d workers", run.pk, len(parts),
                settings.INVENTORY_WORKERS)  # fmt: skip
    try:
        with exchange_spool(run, exchange, exchange_parameters(None), pack=_pack) as local:
            spool = SharedSpool(run.pk, local)
            alive = heartbeat(run, _BEAT_SECONDS)

            def also() -> None:  # the coordinator shares what Exchange gave while it works, and speaks for the run
                spool.publish()
                alive()

            for _ in range(settings.INVENTORY_WORKERS - 1):  # Redis unreachable: the parts are all the coordinator's
                transaction.on_commit(partial(enqueue, INVENTORY_SHARD_JOB, run.pk, job_timeout=INVENTORY_JOB_TIMEOUT))
            take_part(run, directory, spool, also=also)
            _wait_for_parts(run, directory, spool, also=also)
            while not spool.finished:
                alive()
                time.sleep(_WAIT_SECONDS)
        logger.info(
            "inventory %s: %d Exchange objects shared, %d taken by the directory pass", run.pk, spool.published,
            InventoryObject.objects.filter(run=run, taken=True).count(),
        )  # fmt: skip
        graph_pass(run, graph)
        newest = InventoryShard.objects.filter(run=run).aggregate(newest=Max("exo_newest"))["newest"]
        newest = exchange_pass(run, spool.remaining(PAGE_SIZE), newest)
    finally:
        InventoryObject.objects.filter(run=run).delete()
    return newest, mark


def spread_database_problem(workers: int, vendor: str) -> str:
    """Why ``workers`` processes cannot share a spread import on a ``vendor`` database; "" when they can."""
    if workers <= 1 or vendor != "sqlite":
        return ""
    return (
        f"INVENTORY_WORKERS is {workers} on SQLite: worker processes writing one SQLite file at once lock each other "
        "out, and a spread import's pages would fail."
    )


def check_spread_database(app_configs: object = None, **kwargs: object) -> list[checks.Error]:
    """System check: a full import spread over worker processes needs a database they can all write at once."""
    problem = spread_database_problem(settings.INVENTORY_WORKERS, connection.vendor)
    if not problem:
        return []
    hint = "Use PostgreSQL (DATABASE_URL) to spread imports over workers, or set INVENTORY_WORKERS=1."
    return [checks.Error(problem, hint=hint, id="writeback.E003")]


def inventory_shard_work(run_id: int) -> int:
    """A helper job's work: take part in spread import ``run_id`` while it runs and has parts queued."""
    run = InventoryRun.objects.filter(pk=run_id, state=InventoryRun.State.RUNNING).first()
    if run is None or not InventoryShard.objects.filter(run=run, state=InventoryShard.State.QUEUED).exists():
        return 0
    directory = DirectoryClient(DirectoryConfig.from_settings())
    try:
        return take_part(run, directory, SharedSpool(run.pk))
    finally:
        directory.close()
