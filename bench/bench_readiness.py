"""The decommission readiness page at scale: what rendering it costs over N mailboxes, measured afresh and reused.

Fills the database with N synthetic mailboxes spread over 20 OUs, with the columns the page counts varied (authority,
recipient type, dir-synced, found on each side, drift, last change), a submitted wave holding some, open drift
findings and failed writebacks, and 35 earlier daily snapshots (the trend). Then times the background snapshot
(writeback.jobs.readiness), and the whole page through Django's test client: for a tenant-wide administrator from
the recent snapshot (what the page serves), measured now (no recent snapshot) and from the cache; for an operator
scoped to one OU of --ous, summed from the recent snapshot's per-OU groups (what the page serves) and measured now;
then the measurement alone (soa.readiness.measure) and the CSV export.
Target (issue 12): the page's p95 <= 300 ms at 1,000,000 mailboxes on PostgreSQL.

    .venv/bin/python bench/bench_readiness.py [--mailboxes 1000000] [--repeats 20] [--db postgres|sqlite] [--ous 20]

PostgreSQL: with --db postgres and no DATABASE_URL, a fresh database soa_bench_readiness is created on the machine's
server; given DATABASE_URL, that database is migrated and emptied first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, fresh_postgres, load_line, machine_line, setup_django  # noqa: E402

OUS = 20


def _fill_postgres(count: int, ous: int) -> None:
    """One INSERT ... SELECT over generate_series: a million rows in seconds, where bulk_create takes minutes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO soa_mailbox (source_anchor, pairing, dn, dn_norm, ou_norm, upn, display_name, search_name,
                department, primary_smtp, recipient_type_details, is_dir_synced, authority, exo_values, ad_values,
                drift, has_drift, in_exo, in_ad, exo_when_changed, ad_change_mark, version, created_at, updated_at)
            SELECT '', '', 'CN=User ' || i || ',OU=Unit' || (i %% %(ous)s) || ',DC=corp,DC=example,DC=com',
                'cn=user ' || i || ',ou=unit' || (i %% %(ous)s) || ',dc=corp,dc=example,dc=com',
                'ou=unit' || (i %% %(ous)s) || ',dc=corp,dc=example,dc=com',
                'user.' || i || '@corp.example.com', 'User ' || i, 'user ' || i, '',
                'user.' || i || '@corp.example.com',
                (ARRAY['UserMailbox','UserMailbox','UserMailbox','SharedMailbox','RoomMailbox','EquipmentMailbox',
                       'UserMailbox','MailUser'])[1 + i %% 8],
                i %% 50 <> 0, CASE WHEN i %% 10 < 6 THEN 'CLOUD' ELSE 'ON_PREM' END, '{}', '{}', '[]',
                i %% 40 = 0, i %% 97 <> 0, i %% 89 <> 0,
                now() - make_interval(hours => CASE WHEN i %% 30 = 0 THEN 2 ELSE 100 END), '', 1, now(), now()
            FROM generate_series(1, %(count)s) AS i
            """,
            {"count": count, "ous": ous},
        )
        cursor.execute("ANALYZE")


def _fill_orm(count: int, ous: int) -> None:
    from django.utils import timezone

    from soa.choices import Authority
    from soa.models import Mailbox

    types = ["UserMailbox", "UserMailbox", "UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox",
             "UserMailbox", "MailUser"]  # fmt: skip
    now, batch = timezone.now(), []
    for i in range(1, count + 1):
        ou = f"ou=unit{i % ous},dc=corp,dc=example,dc=com"
        batch.append(Mailbox(
            dn=f"CN=User {i},OU=Unit{i % ous},DC=corp,DC=example,DC=com", dn_norm=f"cn=user {i},{ou}", ou_norm=ou,
            upn=f"user.{i}@corp.example.com", display_name=f"User {i}", search_name=f"user {i}",
            primary_smtp=f"user.{i}@corp.example.com", recipient_type_details=types[i % 8], is_dir_synced=i % 50 != 0,
            authority=Authority.CLOUD if i % 10 < 6 else Authority.ON_PREM, has_drift=i % 40 == 0,
            in_exo=i % 97 != 0, in_ad=i % 89 != 0,
            exo_when_changed=now - dt.timedelta(hours=2 if i % 30 == 0 else 100),
        ))  # fmt: skip
        if len(batch) == 5000 or i == count:
            Mailbox.objects.bulk_create(batch)
            batch = []


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--ous", type=int, default=OUS, help="OUs the mailboxes are spread over (evenly)")
    args = parser.parse_args()
    fresh_postgres(args.db, "soa_bench_readiness")
    engine = setup_django("readiness")
    from django.conf import settings
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from portal.models import User
    from portal.roles import Role
    from portal.services import role_assign
    from soa.choices import WaveDirection, WaveState
    from soa.models import Mailbox, PilotWave, ReadinessSnapshot, WaveMember
    from soa.readiness import measure
    from writeback.jobs.readiness import readiness_snapshot_take
    from writeback.models import DriftFinding, WritebackTask
    from writeback.selectors import readiness_writeback_counts

    print("bench_readiness: the decommission readiness page at scale")
    print(machine_line())
    print(load_line())
    print(f"database: {engine}; options: {vars(args)}")
    started = time.perf_counter()
    (_fill_postgres if connection.vendor == "postgresql" else _fill_orm)(args.mailboxes, args.ous)
    admin = User.objects.create_user("bench-admin")
    role_assign(actor=None, user=admin, role=Role.ADMIN, tenant_wide=True)
    scoped = User.objects.create_user("bench-scoped")
    role_assign(actor=None, user=scoped, role=Role.WAVE_OPERATOR, scopes=["OU=Unit3,DC=corp,DC=example,DC=com"])
    wave = PilotWave.objects.create(name="Bench wave", direction=WaveDirection.TO_CLOUD, state=WaveState.SUBMITTED,
                                    created_by=admin)  # fmt: skip
    on_prem = list(Mailbox.objects.filter(authority="ON_PREM").order_by("id").values_list("id", flat=True)[:2000])
    WaveMember.objects.bulk_create(WaveMember(wave=wave, mailbox_id=pk) for pk in on_prem[:1000])
    DriftFinding.objects.bulk_create(DriftFinding(mailbox_id=pk, attribute="CustomAttribute1") for pk in on_prem[:500])
    WritebackTask.objects.bulk_create(
        WritebackTask(mailbox_id=pk, state=WritebackTask.State.FAILED, source="bench") for pk in on_prem[1000:1200]
    )
    today = timezone.now().date()
    ReadinessSnapshot.objects.bulk_create(
        ReadinessSnapshot(
            day=today - dt.timedelta(days=back),
            taken_at=timezone.now() - dt.timedelta(days=back),
            total=args.mailboxes,
            cloud=args.mailboxes // (back + 1),
        )
        for back in range(1, 36)
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"filled {args.mailboxes:,} mailboxes in {time.perf_counter() - started:.1f} s")

    clients = {}
    for name, user in (("tenant-wide", admin), ("scoped to one OU", scoped)):
        clients[name] = Client(SERVER_NAME="localhost")
        clients[name].force_login(user)

    def page(client, *, fresh: bool, snapshot_age: int = 0):
        settings.READINESS_SNAPSHOT_MAX_AGE_MINUTES = snapshot_age  # 0: the snapshot is never used
        if fresh:
            cache.clear()
        response = client.get("/mailboxes/readiness/")
        assert response.status_code == 200, response.status_code
        return response

    def export(client):
        settings.READINESS_SNAPSHOT_MAX_AGE_MINUTES = 0
        response = client.get("/mailboxes/readiness/export.csv")
        return b"".join(response.streaming_content)

    def measure_alone():
        mailboxes = Mailbox.objects.all()
        return measure(mailboxes, now=timezone.now(), quiet_period=dt.timedelta(hours=24.5),
                       writeback=readiness_writeback_counts(mailboxes))  # fmt: skip

    wide, narrow = clients["tenant-wide"], clients["scoped to one OU"]
    runs = {
        "background snapshot (tenant-wide measurement + row)": readiness_snapshot_take,
        "page from the recent snapshot (tenant-wide)": lambda: page(wide, fresh=True, snapshot_age=60),
        "page measured now, no snapshot (tenant-wide)": lambda: page(wide, fresh=True),
        "page from the snapshot's OU groups (scoped to one OU)": lambda: page(narrow, fresh=True, snapshot_age=60),
        "page measured now, no snapshot (scoped to one OU)": lambda: page(narrow, fresh=True),
        "page, measurement reused from the cache (tenant-wide)": lambda: page(wide, fresh=False),
        "measurement alone, no template (tenant-wide)": measure_alone,
        "CSV export, measurement reused (tenant-wide)": lambda: export(wide),
    }
    settings.READINESS_CACHE_SECONDS = 300
    for name, run in runs.items():
        figure = Figure(name, "ms")
        run()  # warm up (and fill the cache for the "reused" runs)
        for _ in range(args.repeats):
            began = time.perf_counter()
            run()
            figure.samples.append((time.perf_counter() - began) * 1000)
        print(f"{figure.row()}  p95 {_p95(figure.samples):,.1f} ms")
    print(load_line())


if __name__ == "__main__":
    main()
