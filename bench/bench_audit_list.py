"""The audit list at scale: what the page costs, unfiltered, deep in the history and under each filter, with
N events in the log (a million on PostgreSQL for the figures that matter), and how fast an export streams.

Fills the log with N synthetic events, hash-chained as the portal chains them (ids in order, each keyed hash over
its predecessor's; COPY on PostgreSQL, bulk INSERT on SQLite: inserts only, which the append-only triggers allow),
by 50 help desk users and the system, over N/50 mailboxes (two addresses each) with one change request each and
N/20,000 waves of 200 members. The mix: 40 % edits (requested, applying, applied; a third by people), 15 % inventory
updates of mailboxes, 20 % wave member flips, 5 % wave events, 10 % sign-ins, 10 % the log's own records.

Times, as an auditor through Django's test client (middleware, the view, its queries and the template), each filter
with a different value on each repeat (p50 and p95 over the repeats): the first page, a keyset page in the middle of
the history, and each filter of the list. The mailbox timeline is the query a mailbox page's history would run (the
events of one mailbox's objects, one keyset page). The export is a CSV of a month of events, streamed to the end.
Baseline, measured in the same run: the bare primary-key query of the newest 51 events. Target (issue 10):
p95 <= 100 ms for each filter and the timeline at 1,000,000 events on PostgreSQL.

    .venv/bin/python bench/bench_audit_list.py [--events 100000] [--repeats 20] [--database postgres]

At 1,000,000 events on PostgreSQL 15 (2 shared cores, load 3-4), 2026-11-30: every filter's p95 between 12 and 43 ms,
the first page 74 ms, the mailbox timeline 7 ms; the export streams about 32,000 rows/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, fresh_postgres, load_line, machine_line, setup_django  # noqa: E402

HELPERS = 50
WAVE_SIZE = 200
OU = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
DOMAIN = "corp.example.com"
START = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
STEP = dt.timedelta(seconds=20)  # a million events span about 231 days


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def seed(n: int) -> dict:
    """Mailboxes, change requests, waves and members, then n chained events over them; what the runs need back."""
    from django.db import connection

    from portal.audit_chain import GENESIS_HASH, compute_hash, require_chain_key
    from portal.dn import normalize_dn
    from portal.models import AuditEvent, User
    from soa.choices import ChangeRoute, ChangeState, WaveDirection
    from soa.models import ChangeRequest, Mailbox, MailboxAddress, PilotWave, WaveMember

    mailboxes = max(100, n // 50)
    waves = max(2, n // 20_000)
    owner = User.objects.create_user("bench-owner")
    made = []
    for start in range(0, mailboxes, 5000):
        rows = []
        for i in range(start, min(start + 5000, mailboxes)):
            upn = f"user.{i:07d}@{DOMAIN}"
            dn = f"CN=User {i:07d},{OU}"
            rows.append(Mailbox(dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(OU), upn=upn, primary_smtp=upn,
                                display_name=f"User {i:07d}", search_name=f"user {i:07d}"))  # fmt: skip
        created = Mailbox.objects.bulk_create(rows)
        MailboxAddress.objects.bulk_create(
            MailboxAddress(mailbox=m, prefix="smtp", address=a, is_primary=p)
            for m in created
            for a, p in ((m.upn, True), (f"alias-{m.upn}", False))
        )
        made += created
    changes = ChangeRequest.objects.bulk_create(
        ChangeRequest(mailbox=m, requested_by=owner, operations=[], desired={"CustomAttribute1": "x"}, base_version=1,
                      state=ChangeState.APPLIED, route=ChangeRoute.AD_ONLY, idempotency_key=f"bench-{m.pk}")
        for m in made
    )  # fmt: skip
    wave_rows = PilotWave.objects.bulk_create(
        PilotWave(name=f"Wave {w}", direction=WaveDirection.TO_CLOUD, created_by=owner) for w in range(waves)
    )
    members = WaveMember.objects.bulk_create(
        WaveMember(wave=wave, mailbox=made[(w * WAVE_SIZE + k) % len(made)])
        for w, wave in enumerate(wave_rows)
        for k in range(WAVE_SIZE)
    )
    people = [User.objects.create_user(f"help-{h:02d}", first_name="Help Desk", last_name=f"{h:02d}")
              for h in range(HELPERS)]  # fmt: skip
    helpers = [(person.pk, f"{person.username} ({person.get_full_name()})") for person in people]
    key = require_chain_key()
    rng = random.Random(10)
    prev = GENESIS_HASH
    fields = ["id", "occurred_at", "actor_id", "actor_name", "action", "object_type", "object_id", "object_repr",
              "before", "after", "reason", "correlation_id", "prev_hash", "hash"]  # fmt: skip
    postgres = connection.vendor == "postgresql"
    started = time.perf_counter()
    buffer: list[AuditEvent] = []

    def flush() -> None:
        if not buffer:
            return
        if postgres:
            with (
                connection.cursor() as cursor,
                cursor.cursor.copy(f"COPY portal_auditevent ({', '.join(fields)}) FROM STDIN") as copy,
            ):
                for e in buffer:
                    copy.write_row([e.id, e.occurred_at, e.actor_id, e.actor_name, e.action, e.object_type, e.object_id,
                                    e.object_repr, None if e.before is None else json.dumps(e.before),
                                    None if e.after is None else json.dumps(e.after), e.reason, e.correlation_id,
                                    e.prev_hash, e.hash])  # fmt: skip
        else:
            AuditEvent.objects.bulk_create(buffer, batch_size=2000)
        buffer.clear()

    for i in range(1, n + 1):
        kind = i % 20
        at = START + STEP * i
        before = after = None
        correlation, reason, actor = "", "", (None, "system")
        if kind < 8:
            change = changes[rng.randrange(len(changes))]
            action = ("soa.change.requested", "soa.change.applying", "soa.change.applied")[kind % 3]
            object_type, object_id, text = "soa.changerequest", str(change.pk), f"change request #{change.pk}"
            actor = helpers[change.pk % HELPERS] if kind % 3 == 0 else (None, "system")
            correlation = f"corr-{change.pk:08d}-{rng.randrange(4)}"
            before, after = {"state": "VALIDATED"}, {"state": "APPLIED", "mailbox": change.mailbox_id}
            reason = "ticket"
        elif kind < 11:
            mailbox = made[rng.randrange(len(made))]
            action, object_type, object_id = "soa.inventory.mailbox_updated", "soa.mailbox", str(mailbox.pk)
            text, after = mailbox.upn, {"CustomAttribute1": f"v{i % 7}"}
        elif kind < 15:
            member = members[rng.randrange(len(members))]
            action, object_type, object_id = "soa.wave.member_done", "soa.wavemember", str(member.pk)
            text, after = f"member #{member.pk}", {"state": "DONE"}
        elif kind < 16:
            wave = wave_rows[rng.randrange(len(wave_rows))]
            action, object_type, object_id, text = "soa.wave.batch_claimed", "soa.pilotwave", str(wave.pk), wave.name
        elif kind < 18:
            actor = helpers[rng.randrange(HELPERS)]
            action, object_type, object_id, text = "portal.signin.succeeded", "portal.user", str(owner.pk), actor[1]
        else:
            action, object_type, object_id, text = "portal.audit.exported", "audit", "", ""
        event = AuditEvent(id=i, occurred_at=at, actor_id=actor[0], actor_name=actor[1], action=action,
                           object_type=object_type, object_id=object_id, object_repr=text, before=before, after=after,
                           reason=reason, correlation_id=correlation, prev_hash=prev)  # fmt: skip
        event.hash = prev = compute_hash(event, key)
        buffer.append(event)
        if len(buffer) == 20_000:
            flush()
    flush()
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    seconds = time.perf_counter() - started
    print(f"filled {n:,} events ({mailboxes:,} mailboxes, {waves} waves) in {seconds:.1f} s ({n / seconds:,.0f}/s)")
    return {"mailboxes": made, "waves": wave_rows, "changes": changes, "helpers": helpers, "last": START + STEP * n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)  # 1,000,000 for the target: about 6 minutes
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    fresh_postgres(args.database, "soa_portal_bench_audit_list")
    os.environ.setdefault("AUDIT_CHAIN_KEY", "bench-audit-list-" + "k" * 40)
    engine = setup_django("audit-list")
    from django.db import connection
    from django.test import Client

    from portal.cursors import encode_cursor
    from portal.models import User
    from portal.roles import Role
    from portal.services import role_assign
    from portal.views.audit import keyset_page
    from portal.views.audit_objects import mailbox_events

    print("bench_audit_list: the audit list's pages, filters and export at scale")
    print(machine_line())
    print(load_line())
    print(f"database: {engine}; options: {vars(args)}")
    world = seed(args.events)
    auditor = User.objects.create_user("bench-auditor")
    role_assign(actor=None, user=auditor, role=Role.AUDITOR, tenant_wide=True)
    client = Client(SERVER_NAME="localhost")
    client.force_login(auditor)
    rng = random.Random(7)

    def page(**query) -> None:
        response = client.get("/audit/", query)
        assert response.status_code == 200, (query, response.status_code, response.content[:300])

    def mailbox() -> object:
        return world["mailboxes"][rng.randrange(len(world["mailboxes"]))]

    def middle() -> str:
        at = world["last"] - (world["last"] - START) * rng.uniform(0.3, 0.7)
        return encode_cursor(at, 10**12)

    def window() -> dict:
        since = START + (world["last"] - START) * rng.uniform(0.1, 0.9)
        return {"since": since.strftime("%Y-%m-%d %H:%M"), "until": (since + dt.timedelta(days=7)).strftime(
            "%Y-%m-%d %H:%M")}  # fmt: skip

    def baseline() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM portal_auditevent ORDER BY id DESC LIMIT 51")
            cursor.fetchall()

    def timeline() -> None:
        objects, _ = mailbox_events(user=auditor, text=mailbox().upn)
        from portal.models import AuditEvent

        keyset_page(AuditEvent.objects.filter(objects))

    helpers = world["helpers"]
    runs = {
        "baseline: newest 51 ids by primary key": baseline,
        "first page, no filter": lambda: page(),
        "keyset page in the middle of the history": lambda: page(after=middle()),
        "actor (one help desk person, by name)": lambda: page(actor=helpers[rng.randrange(HELPERS)][1][:7]),
        "actor (the system)": lambda: page(actor="system"),
        "actor nobody is (whole-log text match)": lambda: page(actor=f"nobody-{rng.randrange(1000)}"),
        "action prefix (frequent: soa.change.applied)": lambda: page(action="soa.change.applied"),
        "action prefix (absent)": lambda: page(action=f"soa.none.{rng.randrange(1000)}"),
        "object id or text": lambda: page(object=str(world["changes"][rng.randrange(len(world["changes"]))].pk)),
        "correlation id": lambda: page(
            correlation_id=f"corr-{world['changes'][rng.randrange(len(world['changes']))].pk:08d}-1"
        ),
        "mailbox by an alias address": lambda: page(mailbox=f"alias-{mailbox().upn}"),
        "mailbox by its UPN": lambda: page(mailbox=mailbox().upn),
        "wave": lambda: page(wave=world["waves"][rng.randrange(len(world["waves"]))].pk),
        "one week (since/until)": lambda: page(**window()),
        "hide the log's own records": lambda: page(hide_audit="on"),
        "mailbox timeline (one mailbox's events, one page)": timeline,
    }
    figures = {}
    for name, run in runs.items():
        figure = figures[name] = Figure(name, "ms")
        run()  # warm up
        for _ in range(args.repeats):
            began = time.perf_counter()
            run()
            figure.samples.append((time.perf_counter() - began) * 1000)
        print(f"{name:<52} p50 {figure.median:>8,.2f} ms   p95 {p95(figure.samples):>8,.2f} ms   (n={args.repeats})")
    slowest = max((f for n, f in figures.items() if not n.startswith("baseline")), key=lambda f: p95(f.samples))
    print(f"slowest p95: {slowest.name} at {p95(slowest.samples):,.1f} ms (target <= 100 ms)")

    since = START + (world["last"] - START) * 0.5
    query = {"since": since.strftime("%Y-%m-%d %H:%M"), "until": (since + dt.timedelta(days=30)).strftime(
        "%Y-%m-%d %H:%M")}  # fmt: skip
    rates = Figure("export CSV, a month of events", "rows/s")
    for _ in range(3):
        began = time.perf_counter()
        response = client.get("/audit/export.csv", query)
        sink = io.BytesIO()
        for chunk in response.streaming_content:
            sink.write(chunk)
        rows = sink.getvalue().count(b"\n") - 1
        rates.samples.append(rows / (time.perf_counter() - began))
    print(f"{rates.row()}  ({rows:,} rows each)")
    print(load_line())


if __name__ == "__main__":
    main()
