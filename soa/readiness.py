"""Decommission readiness: how far the tenant is from removing its last Exchange server, counted from the inventory.

Pure reads of the domain (the writeback's own figures, open drift findings and failed writebacks, are counted by
writeback.selectors and handed in by the caller: soa does not read writeback). ``measure`` counts over any mailbox
queryset (the caller's scope); ``checklist`` turns the figures into Microsoft's documented conditions for
removing the last Exchange server (reference/exchange-facts.md §7.3), each met or not met.

The blockers are the per-member pre-flight reasons (soa.preflight) that a mailbox still mastered in AD would meet
in a wave to the cloud today, counted in SQL rather than by running pre-flight on every row, so the page stays one
scan of the table at a million mailboxes. Warnings are not blockers and are not counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.db.models.fields.json import KT
from django.utils import timezone

from portal.roles import subtree_filter
from soa.choices import CHANGE_OPEN_STATES, WAVE_CLAIMING_STATES, Authority
from soa.models import ChangeRequest, Mailbox, ReadinessGroup, ReadinessSnapshot, WaveMember
from soa.preflight import SUPPORTED_RECIPIENT_TYPES, Code, stale_consumer_attributes

# OUs the page lists (most mailboxes still in AD first); the CSV export lists them all.
OU_ROWS = 25
TREND_DAYS = 90

# What Microsoft says to do with a recipient the per-mailbox flag does not cover (exchange-facts §1.1, §7.3).
GROUP_CONTACT_ADVICE = (
    "Not covered by IsExchangeCloudManaged: move it with object-level SOA through Microsoft Graph "
    "(onPremisesSyncBehavior.isCloudManaged), exchange-facts §1.1 and §7.3."
)
NO_DOCUMENTED_PATH = (
    "Not covered by IsExchangeCloudManaged, which applies to user, shared, room and equipment mailboxes only "
    "(exchange-facts §1.1); the reference documents no other path for this type."
)
_GROUP_OR_CONTACT = ("group", "contact")


def advice_for(recipient_type: str) -> str:
    lowered = recipient_type.lower()
    return GROUP_CONTACT_ADVICE if any(word in lowered for word in _GROUP_OR_CONTACT) else NO_DOCUMENTED_PATH


# The pre-flight reasons counted for a mailbox still in AD, each with its condition (in SQL) and its label.
def _blocker_conditions(now: dt.datetime, quiet_period: dt.timedelta) -> dict[str, Q]:
    # IN (SELECT ...) rather than EXISTS: PostgreSQL hashes the small subquery once instead of probing it per row.
    in_other_wave = Q(
        pk__in=WaveMember.objects.filter(wave__state__in=WAVE_CLAIMING_STATES, excluded=False).values("mailbox_id")
    )
    open_change = Q(pk__in=ChangeRequest.objects.filter(state__in=CHANGE_OPEN_STATES).values("mailbox_id"))
    return {
        Code.NOT_DIR_SYNCED: Q(is_dir_synced=False),
        Code.UNSUPPORTED_RECIPIENT_TYPE: ~Q(recipient_type_details__in=SUPPORTED_RECIPIENT_TYPES),
        Code.MISSING_IN_EXO: Q(in_exo=False),
        Code.MISSING_IN_AD: Q(in_ad=False),
        Code.RECENT_ON_PREM_CHANGE: Q(exo_when_changed__gt=now - quiet_period),
        Code.IN_OTHER_WAVE: Q(in_other_wave),
        Code.OPEN_CHANGE_REQUEST: Q(open_change),
    }


BLOCKER_LABELS = {
    Code.NOT_DIR_SYNCED: "Not synchronised from AD",
    Code.UNSUPPORTED_RECIPIENT_TYPE: "Recipient type the portal cannot move",
    Code.MISSING_IN_EXO: "Not found in Exchange Online",
    Code.MISSING_IN_AD: "Not found in Active Directory",
    Code.RECENT_ON_PREM_CHANGE: "Changed within the quiet period",
    Code.IN_OTHER_WAVE: "Already in an open wave",
    Code.OPEN_CHANGE_REQUEST: "Open help-desk change request",
}


def group_counts(mailboxes: QuerySet[Mailbox], *, now: dt.datetime, quiet_period: dt.timedelta) -> list[dict]:
    """Every count of the page per (OU, recipient type, authority) group of ``mailboxes``, in one scan: the rows
    ``summarise`` adds up, and what a snapshot keeps (ReadinessGroup) so an OU's figures are a sum of its groups."""
    conditions = _blocker_conditions(now, quiet_period)
    counts = {
        "n": Count("id"),
        "drifted": Count("id", filter=Q(has_drift=True)),
        "synced": Count("id", filter=Q(is_dir_synced=True)),
        "not_in_exo": Count("id", filter=Q(in_exo=False, in_ad=True)),
        "ready": Count("id", filter=~_any(conditions.values())),
        **{f"blocked_{code}": Count("id", filter=condition) for code, condition in conditions.items()},
    }
    return list(mailboxes.order_by().values("ou_norm", "recipient_type_details", "authority").annotate(**counts))


def measure(
    mailboxes: QuerySet[Mailbox], *, now: dt.datetime, quiet_period: dt.timedelta, writeback: dict[str, int]
) -> dict[str, Any]:
    """Every figure of the page over ``mailboxes`` (JSON-safe: the snapshot stores it as it is).

    ``writeback`` holds ``open_drift`` (open drift findings) and ``failed_writebacks`` (tasks in FAILED), counted
    by the caller over the same scope.
    """
    groups = group_counts(mailboxes, now=now, quiet_period=quiet_period)
    return summarise(groups, measured_at=now.isoformat(), writeback=writeback)


def summarise(groups: Iterable[dict], *, measured_at: str, writeback: dict[str, int]) -> dict[str, Any]:
    """The page's figures from group rows (group_counts'), measured at ``measured_at`` (ISO 8601)."""
    # A group's authority and type are fixed, so the blocker counts of cloud groups are simply not added.
    totals = dict.fromkeys(
        ("total", "cloud", "on_prem", "drifted", "synced_not_moved", "not_in_exo", "unsupported", "ready"), 0
    )
    blocked = dict.fromkeys(BLOCKER_LABELS, 0)
    types: dict[str, dict[str, int]] = {}
    ous: dict[str, dict[str, int]] = {}
    for group in groups:
        n, kind, cloud = group["n"], group["recipient_type_details"] or "", group["authority"] == Authority.CLOUD
        supported = kind in SUPPORTED_RECIPIENT_TYPES
        totals["total"] += n
        totals["drifted"] += group["drifted"]
        totals["not_in_exo"] += group["not_in_exo"]
        totals["unsupported"] += 0 if supported else n
        if cloud:
            totals["cloud"] += n
        else:
            totals["on_prem"] += n
            totals["ready"] += group["ready"]
            # §7.3's inventory: dir-synced mailboxes of the types the flag covers that are not cloud-managed yet.
            totals["synced_not_moved"] += group["synced"] if supported else 0
            for code in blocked:
                blocked[code] += group.get(f"blocked_{code}", 0)
        for table, key in ((types, kind), (ous, group["ou_norm"])):
            row = table.setdefault(key, {"cloud": 0, "on_prem": 0, "total": 0})
            row["cloud" if cloud else "on_prem"] += n
            row["total"] += n
    blockers = [{"code": str(code), "label": label, "count": blocked[code]} for code, label in BLOCKER_LABELS.items()]
    by_type = [
        {"recipient_type": kind, **row, "supported": kind in SUPPORTED_RECIPIENT_TYPES}
        for kind, row in sorted(types.items())
    ]
    by_ou = [{"ou": ou, **row} for ou, row in sorted(ous.items(), key=lambda item: (-item[1]["on_prem"], item[0]))]
    unsupported = [
        {"recipient_type": row["recipient_type"] or "unknown", "count": row["total"],
         "advice": advice_for(row["recipient_type"])}
        for row in by_type if not row["supported"]
    ]  # fmt: skip
    stale = [{"attribute": name, "applications": list(apps)} for name, apps in stale_consumer_attributes().items()]
    return {
        "measured_at": measured_at,
        **totals,
        "open_drift": int(writeback.get("open_drift", 0)),
        "failed_writebacks": int(writeback.get("failed_writebacks", 0)),
        "blockers": blockers,
        "by_type": by_type,
        "by_ou": by_ou,
        "unsupported_types": unsupported,
        "stale_attributes": stale,
    }


def _any(conditions) -> Q:
    combined = Q(pk__in=[])
    for condition in conditions:
        combined |= condition
    return combined


@dataclass(frozen=True)
class ChecklistItem:
    """One condition Microsoft documents for removing the last Exchange server, as measured."""

    key: str
    title: str
    source: str  # the section of reference/exchange-facts.md that documents it
    met: bool
    measured: str  # what the portal counted, in words
    evidence: str  # the URL name of the page that shows the evidence...
    evidence_suffix: str = ""  # ...and what follows it: a query of the mailbox list's filters, or an anchor


def checklist(figures: dict[str, Any]) -> list[ChecklistItem]:
    """§7.3's conditions the inventory can measure, each met or not met from ``figures``."""
    synced = figures["synced_not_moved"]
    missing = figures["not_in_exo"]
    unsupported = figures["unsupported"]
    failed = figures["failed_writebacks"]
    return [
        ChecklistItem(
            "soa_all_mailboxes",
            "Exchange-attribute SOA transferred for every directory-synchronised mailbox",
            "§7.3 (prerequisite 2), §1.1",
            synced == 0,
            f"{synced:,} directory-synchronised user, shared, room or equipment mailboxes are still mastered in AD.",
            "mailbox_list",
            "?authority=ON_PREM",
        ),
        ChecklistItem(
            "mailboxes_in_exo",
            "Mailboxes are hosted in Exchange Online",
            "§7.3 (prior state)",
            missing == 0,
            f"{missing:,} recipients found in AD were not found in Exchange Online at the last inventory.",
            "readiness",
            "#blockers",
        ),
        ChecklistItem(
            "groups_contacts",
            "Recipients the per-mailbox flag does not cover (groups, contacts) moved by object-level SOA",
            "§7.3, §1.1",
            unsupported == 0,
            f"{unsupported:,} recipients of types the portal cannot move are in the inventory; their SOA must be "
            "moved and checked outside the portal. The inventory reads mailboxes and AD users only: confirm groups "
            "and contacts in Microsoft Graph.",
            "readiness",
            "#unsupported",
        ),
        ChecklistItem(
            "writeback_works",
            "Writeback works (Microsoft's runbook checks it again after the uninstall)",
            "§7.3 (step 11), §2",
            failed == 0,
            f"{failed:,} writebacks to AD have failed and were not retried successfully.",
            "readiness",
            "#writeback",
        ),
    ]


# Conditions §7.3 lists that the inventory cannot see: the page names them for a person to check.
MANUAL_CONDITIONS = (
    "Public folders migrated to Exchange Online or removed (§7.3, prior state).",
    "MX and Autodiscover records point at Exchange Online (§7.3, prior state and step 4).",
    "SMTP relay moved off the Exchange server (§7.3, step 3).",
    "Hybrid connectors, organisation relationship and federation trust removed (§7.3, steps 6 to 8).",
    "The tenant default (§1.9) is only switched on once no mailbox is created on-premises any more.",
)


# -- the daily snapshots ------------------------------------------------------------------------------------------


def snapshot_take(figures: dict[str, Any], *, day: dt.date, groups: list[dict] | None = None) -> ReadinessSnapshot:
    """Record ``figures`` as the snapshot of ``day``: a later one the same day replaces it (the day keeps its last).

    ``groups`` (group_counts' rows, each with its ``open_drift`` and ``failed_writebacks``) replace the groups any
    snapshot kept, so OU-scoped views read the newest measurement.
    """
    with transaction.atomic():
        snapshot, _ = ReadinessSnapshot.objects.update_or_create(
            day=day,
            defaults={
                "taken_at": timezone.now(),
                "total": figures["total"], "cloud": figures["cloud"], "on_prem": figures["on_prem"],
                "drifted": figures["drifted"], "open_drift": figures["open_drift"],
                "failed_writebacks": figures["failed_writebacks"], "figures": figures,
            },
        )  # fmt: skip
        if groups is not None:
            ReadinessGroup.objects.all().delete()
            ReadinessGroup.objects.bulk_create(
                (ReadinessGroup(snapshot=snapshot, ou_norm=group["ou_norm"], counts=group) for group in groups),
                batch_size=2000,
            )
    return snapshot


def latest_snapshot(
    *, max_age: dt.timedelta, now: dt.datetime | None = None, figures: bool = True
) -> ReadinessSnapshot | None:
    """The newest snapshot, when it was taken within ``max_age`` (a zero age: never). ``figures`` False leaves the
    tenant-wide figures unread (with every OU of a large tenant they weigh); ``measured_at`` is read either way."""
    if max_age <= dt.timedelta(0):
        return None
    since = (now or timezone.now()) - max_age
    # A snapshot without its figures (one made by hand, or a demo's invented history) only feeds the trend.
    snapshots = ReadinessSnapshot.objects.filter(taken_at__gte=since).exclude(figures={})
    if not figures:
        snapshots = snapshots.defer("figures")
    return snapshots.annotate(measured_at=KT("figures__measured_at")).order_by("-taken_at").first()


def snapshot_scoped(snapshot: ReadinessSnapshot, bases: list[str]) -> dict[str, Any] | None:
    """The figures of the mailboxes in the OU subtrees ``bases`` (normalised DNs: a user's scope), summed from the
    groups ``snapshot`` (from latest_snapshot) kept; None when it kept none (taken before groups were kept, or an
    empty tenant) or when a base names a mailbox itself (a scope the per-OU groups cannot tell apart): the caller
    then measures live."""
    groups = ReadinessGroup.objects.filter(snapshot=snapshot)
    if not groups.exists() or Mailbox.objects.filter(dn_norm__in=bases).exists():
        return None
    # A mailbox's DN lies below a base exactly when its parent OU is the base or lies below it.
    where = Q(pk__in=[])
    for base in bases:
        where |= subtree_filter("ou_norm", base)
    rows = list(groups.filter(where).values_list("counts", flat=True))
    writeback = {key: sum(row.get(key, 0) for row in rows) for key in ("open_drift", "failed_writebacks")}
    return summarise(rows, measured_at=snapshot.measured_at or snapshot.taken_at.isoformat(), writeback=writeback)


def trend(*, today: dt.date, days: int = TREND_DAYS) -> list[ReadinessSnapshot]:
    """The daily snapshots of the last ``days`` days, oldest first (tenant-wide figures)."""
    return list(
        ReadinessSnapshot.objects.filter(day__gt=today - dt.timedelta(days=days)).order_by("day").defer("figures")
    )


@dataclass(frozen=True)
class Chart:
    """A line chart drawn as SVG by the template: its polyline's points and its axis labels."""

    points: str
    dots: list[tuple[float, float, str, int]]
    top: int
    first_day: str
    last_day: str
    width: int = 600
    height: int = 160


def chart(snapshots: list[ReadinessSnapshot], field: str, *, width: int = 600, height: int = 160) -> Chart | None:
    """A line of ``field`` over the snapshots, scaled into a ``width`` × ``height`` box (with room for labels)."""
    if not snapshots:
        return None
    values = [getattr(snapshot, field) for snapshot in snapshots]
    top = max(max(values), 1)
    left, right, upper, lower = 48, width - 8, 8, height - 24
    span = max(len(values) - 1, 1)
    dots = []
    for index, (snapshot, value) in enumerate(zip(snapshots, values, strict=True)):
        x = left + (right - left) * index / span
        y = lower - (lower - upper) * value / top
        dots.append((round(x, 1), round(y, 1), snapshot.day.isoformat(), value))
    return Chart(
        points=" ".join(f"{x},{y}" for x, y, _, _ in dots), dots=dots, top=top,
        first_day=snapshots[0].day.isoformat(), last_day=snapshots[-1].day.isoformat(), width=width, height=height,
    )  # fmt: skip
