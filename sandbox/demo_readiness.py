"""The demo's readiness trend: five weeks of daily snapshots leading up to today's real one (`make demo`, after the
pilot waves), so the readiness page has a trend to draw on its first day.

Today's snapshot is measured (writeback.jobs.readiness); the earlier ones are made up, rising steadily towards
today's cloud-managed count with drift coming and going, and are only written when no earlier snapshot exists, so a
restarted demo keeps the history it recorded.

    python -m sandbox.demo_readiness   # with the demo's environment (sandbox.demo runs it)
"""

import datetime as dt
import os
import sys

DAYS = 35


def demo_readiness_seed(*, say=print) -> int:
    """Take today's snapshot and invent the DAYS before it when there is no history yet; returns snapshots added."""
    from django.utils import timezone

    from soa.models import ReadinessSnapshot
    from writeback.jobs.readiness import readiness_snapshot_take

    today_snapshot = readiness_snapshot_take()
    if ReadinessSnapshot.objects.filter(day__lt=today_snapshot.day).exists():
        say("Readiness trend: history kept from the last run.")
        return 0
    today, total = today_snapshot.day, today_snapshot.total
    history = []
    for back in range(DAYS, 0, -1):
        share = (DAYS - back) / DAYS  # 0 five weeks ago, almost 1 yesterday
        cloud = int(today_snapshot.cloud * share * share)  # slow pilots first, then whole OUs
        drift = max(0, int(today_snapshot.open_drift + 6 * share * (1 - share) * 4 + (back % 5 == 0) * 3))
        history.append(ReadinessSnapshot(
            day=today - dt.timedelta(days=back), taken_at=timezone.now() - dt.timedelta(days=back), total=total,
            cloud=cloud, on_prem=total - cloud, drifted=drift, open_drift=drift, failed_writebacks=0,
        ))  # fmt: skip
    ReadinessSnapshot.objects.bulk_create(history)
    say(f"Readiness trend: {len(history)} earlier daily snapshots seeded before today's ({today_snapshot.cloud} of "
        f"{total} mailboxes cloud-managed).")  # fmt: skip
    return len(history)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    demo_readiness_seed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
