"""A mailbox's timeline at scale: the events of one mailbox among N audit events, as the timeline page reads them.

Fills PostgreSQL's audit table with N synthetic events (generate_series: other mailboxes' change requests, writeback
tasks and wave members, and a full import's page events, each naming 500 mailboxes) plus one mailbox's own history
(30 change requests, their writebacks, two flips), then times the timeline page's query (soa.views_history:
the events of the mailbox and its objects, and the import pages that name it, newest 100) as p50 and p95. Baseline,
in the same run: the bare index read of the mailbox's own events (object_type, object_id, newest 100). The issue's
target: p95 at most 100 ms at 1,000,000 events.

    .venv/bin/python bench/bench_mailbox_timeline.py [--events 1000000] [--repeats 50]

Uses DATABASE_URL, or postgres://postgres@127.0.0.1:5432/soa_portal_bench_timeline (dropped and created first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fresh_postgres, machine_line, setup_django  # noqa: E402

IMPORT_PAGES = 2000  # a full import of 1,000,000 mailboxes, 500 a page
PAGE = 500


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    fresh_postgres("postgres", "soa_portal_bench_timeline")
    engine = setup_django("timeline")
    if "postgresql" not in engine:
        sys.exit("bench_mailbox_timeline measures PostgreSQL; set DATABASE_URL to a PostgreSQL database")
    from django.db import connection
    from django.utils import timezone

    from portal.models import AuditEvent
    from soa.models import ChangeRequest, Mailbox, WaveMember
    from soa.views_history import NEWEST_FIRST, PAGE_SIZE, mailbox_event_parts, newest_events
    from writeback.models import WritebackTask

    print("bench_mailbox_timeline: one mailbox's timeline among N audit events")
    print(machine_line())
    print(f"database: {engine}; options: {vars(args)}")
    mailbox = Mailbox.objects.create(upn="target@corp.example.com", dn="CN=Target,OU=Corp,DC=corp,DC=example,DC=com",
                                     dn_norm="cn=target,ou=corp,dc=corp,dc=example,dc=com")  # fmt: skip
    # Created just before the import's pages: the timeline looks for the page that created it among all of them.
    Mailbox.objects.filter(pk=mailbox.pk).update(created_at=timezone.now() - timezone.timedelta(days=200, seconds=5))
    mailbox.refresh_from_db()
    started = time.perf_counter()
    others = args.events - IMPORT_PAGES
    with connection.cursor() as cursor:
        # Other objects' events: object ids spread over 300,000 ids of four types, all above the target's ids.
        cursor.execute(
            """
            INSERT INTO portal_auditevent (id, occurred_at, actor_name, action, object_type, object_id, object_repr,
                                           before, after, reason, correlation_id, prev_hash, hash)
            SELECT g, now() - interval '300 days' + g * interval '20 seconds', 'bench',
                   (ARRAY['soa.change.applied', 'writeback.task.completed', 'soa.wave.member_done',
                          'soa.change.requested'])[g %% 4 + 1],
                   (ARRAY['soa.changerequest', 'writeback.writebacktask', 'soa.wavemember',
                          'soa.changerequest'])[g %% 4 + 1],
                   (1000 + g %% 300000)::text, '', NULL,
                   jsonb_build_object('state', 'DONE', 'mailbox', 1000 + g %% 300000), '', 'c-' || (g / 6),
                   '', md5(g::text) || md5((g + 7)::text)
            FROM generate_series(1, %s) AS g
            """,
            [others],
        )  # fmt: skip
        # A full import's page events: 500 mailboxes changed each (never the target).
        cursor.execute(
            """
            INSERT INTO portal_auditevent (id, occurred_at, actor_name, action, object_type, object_id, object_repr,
                                           before, after, reason, correlation_id, prev_hash, hash)
            SELECT %s + p, now() - interval '200 days' + p * interval '1 second', '', 'writeback.inventory.changed',
                   'writeback.inventoryrun', '1', '', NULL,
                   jsonb_build_object('side', 'exo', 'created', '[]'::jsonb, 'changed',
                       (SELECT jsonb_object_agg((10000 + p * 500 + k)::text,
                               jsonb_build_object('authority', jsonb_build_array('ON_PREM', 'CLOUD')))
                        FROM generate_series(1, 500) AS k)),
                   '', '', '', md5(('i' || p)::text) || md5(('j' || p)::text)
            FROM generate_series(1, %s) AS p
            """,
            [others, IMPORT_PAGES],
        )  # fmt: skip
        cursor.execute("ANALYZE portal_auditevent")
    # The target's own history, recorded through the ORM on its real objects.
    from portal.models import User

    user = User.objects.create_user(username="bench-timeline")
    next_id = args.events + 1
    events = []
    for index in range(30):
        change = ChangeRequest.objects.create(mailbox=mailbox, requested_by=user, operations=[], desired={},
                                              base_version=1, state="APPLIED", route="EXO_THEN_AD",
                                              idempotency_key=f"bench-{index}")  # fmt: skip
        task = WritebackTask.objects.create(mailbox=mailbox, desired={}, source=f"change_request:{change.pk}",
                                            state="DONE")  # fmt: skip
        for action, obj in (("soa.change.requested", change), ("soa.change.applied", change),
                            ("writeback.task.completed", task)):  # fmt: skip
            events.append(AuditEvent(id=next_id, occurred_at=timezone.now(), actor_name="bench", action=action,
                                     object_type=obj._meta.label_lower, object_id=str(obj.pk), after={"i": index},
                                     correlation_id=f"t-{index}", prev_hash="", hash=f"t{next_id}"))  # fmt: skip
            next_id += 1
    AuditEvent.objects.bulk_create(events)
    print(f"filled {AuditEvent.objects.count():,} events in {time.perf_counter() - started:.0f} s; "
          f"{WaveMember.objects.count()} wave members")  # fmt: skip

    def timeline() -> int:
        return len(newest_events(mailbox_event_parts(mailbox), limit=PAGE_SIZE + 1))

    def without_imports() -> int:
        return len(newest_events(mailbox_event_parts(mailbox, imports=False), limit=PAGE_SIZE + 1))

    def baseline() -> int:
        own = AuditEvent.objects.filter(
            object_type="soa.changerequest", object_id=str(ChangeRequest.objects.filter(mailbox=mailbox).first().pk)
        )
        return len(list(own.order_by("-id")[: PAGE_SIZE + 1]))

    figures = (
        ("baseline: one object's events by the index", baseline),
        ("mailbox timeline (the page: with import pages)", timeline),
        ("mailbox timeline without import pages", without_imports),
    )
    for name, query in figures:
        query()  # warm
        samples = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            found = query()
            samples.append((time.perf_counter() - began) * 1000)
        p50, p95 = _percentiles(samples)
        print(f"{name:<48} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   ({found} events, n={len(samples)})")
    with connection.cursor() as cursor:
        for part in mailbox_event_parts(mailbox):
            query = AuditEvent.objects.filter(part).order_by(NEWEST_FIRST)[: PAGE_SIZE + 1].query
            sql, params = query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            print("plan:", " | ".join(row[0].strip()[:90] for row in cursor.fetchall()[:5]))


if __name__ == "__main__":
    main()
