"""Mailbox search at scale: what the list page costs for a name, UPN or alias prefix, and deep in the list.

Fills the database with N synthetic mailboxes (two addresses each), then times, as a tenant-wide user and as
a help desk user scoped to one OU: the count and first page of a search, and a keyset page deep in the
list. Baseline, measured in the same run: the bare indexed query (``address LIKE 'prefix%' LIMIT 50``) on
the same table. DESIGN's target: tens of milliseconds at 1,000,000 mailboxes on PostgreSQL.

    .venv/bin/python bench/bench_mailbox_search.py [--mailboxes 200000] [--repeats 7]

PostgreSQL: set DATABASE_URL to a database the benchmark may fill (it is migrated and emptied first).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, machine_line, setup_django  # noqa: E402

OUS = ["Sales", "Finance", "Engineering", "Support"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=200000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    engine = setup_django("search")
    from django.db import connection

    from portal.cursors import encode_cursor
    from portal.dn import normalize_dn
    from portal.models import User
    from portal.roles import Role
    from portal.services import role_assign
    from soa.models import Mailbox, MailboxAddress, MailboxNameWord
    from soa.name_words import name_suffixes
    from soa.selectors import capped_count, mailbox_search, paginate

    print("bench_mailbox_search: search and paging of the mailbox list at scale")
    print(machine_line())
    print(f"database: {engine}; options: {vars(args)}")
    MailboxAddress.objects.all().delete()
    MailboxNameWord.objects.all().delete()
    Mailbox.objects.all().delete()

    started = time.perf_counter()
    batch: list[Mailbox] = []
    for i in range(args.mailboxes):
        ou = f"OU={OUS[i % len(OUS)]},OU=Corp,DC=corp,DC=example,DC=com"
        name = f"User {i:07d}"
        dn = f"CN={name},{ou}"
        batch.append(
            Mailbox(
                dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(ou), upn=f"user.{i:07d}@corp.example.com",
                display_name=name, search_name=name.lower(), primary_smtp=f"user.{i:07d}@corp.example.com",
            )
        )  # fmt: skip
        if len(batch) == 5000 or i == args.mailboxes - 1:
            created = Mailbox.objects.bulk_create(batch)
            MailboxAddress.objects.bulk_create(
                MailboxAddress(mailbox=m, prefix="smtp", address=a, is_primary=p)
                for m in created
                for a, p in ((m.upn, True), (f"alias-{m.upn}", False))
            )
            MailboxNameWord.objects.bulk_create(
                MailboxNameWord(mailbox=m, suffix=suffix) for m in created for suffix in name_suffixes(m.search_name)
            )
            batch = []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"filled {args.mailboxes} mailboxes in {time.perf_counter() - started:.1f} s")

    wide = User.objects.create_user("bench-wide")
    role_assign(actor=None, user=wide, role=Role.WAVE_OPERATOR, tenant_wide=True)
    scoped = User.objects.create_user("bench-scoped")
    role_assign(actor=None, user=scoped, role=Role.HELPDESK, scopes=["OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"])
    middle = f"user {args.mailboxes // 2:07d}"
    prefix = f"{args.mailboxes // 3:07d}"[:5]

    def search_page(user, query):
        mailboxes = mailbox_search(user=user, query=query)  # counted as the list page counts (capped)
        return capped_count(mailboxes), paginate(mailboxes, sort="name", size=50).items

    def deep_page(user):
        after = encode_cursor(f"User {middle[5:]}", 1)
        return paginate(mailbox_search(user=user), sort="name", after=after, size=50).items

    def baseline():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT mailbox_id FROM soa_mailboxaddress WHERE address LIKE %s LIMIT 50", [f"alias-user.{prefix}%"]
            )
            return cursor.fetchall()

    runs = {
        "baseline: indexed address LIKE 'prefix%' LIMIT 50": baseline,
        "alias prefix search, count + first page (tenant-wide)": lambda: search_page(wide, f"alias-user.{prefix}"),
        "name prefix search, count + first page (tenant-wide)": lambda: search_page(wide, f"User {prefix}"),
        "later word of the name, count + first page (tenant-wide)": lambda: search_page(wide, prefix),
        "UPN prefix search, count + first page (scoped to one OU)": lambda: search_page(scoped, f"user.{prefix}"),
        "keyset page in the middle of the list (tenant-wide)": lambda: deep_page(wide),
        "keyset page in the middle of the list (scoped)": lambda: deep_page(scoped),
        "unfiltered count + first page (tenant-wide)": lambda: search_page(wide, ""),
    }
    figures = {}
    for name, run in runs.items():
        figure = figures[name] = Figure(name, "ms")
        result = run()  # warm up, and check the query finds something
        assert result, name
        for _ in range(args.repeats):
            began = time.perf_counter()
            run()
            figure.samples.append((time.perf_counter() - began) * 1000)
        print(figure.row())
    base = next(iter(figures.values())).median
    print(f"slowest search is {max(f.median for f in figures.values()) / base:.1f}x the bare indexed query")


if __name__ == "__main__":
    main()
