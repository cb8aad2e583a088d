"""Pre-flight of a pilot wave: what would go wrong, or be surprising, if its members' authority moved now.

``check_member`` and ``check_wave`` are pure functions over a Mailbox row and a ``Context``; ``build_context``
is the one place that reads the database for them (other waves, the tenant's counts, the consumer registry).
Every finding has a code. Blocking findings exclude a member at submission; warnings must be acknowledged by
each approver. ``Report.as_json()`` is what ``wave_submit`` freezes on the wave.

Sources of the rules: reference/exchange-facts.md §1.3 (dir-synced, timing rule), §1.9/§2 (writeback ceilings,
the attributes written back), §6 (what goes stale, what a revert overwrites).

Approximations, stated once:

- *Last on-prem change*: AD gives no per-attribute change time, and the inventory does not keep AD's
  whenChanged. The check uses Exchange Online's ``WhenChangedUTC`` (``Mailbox.exo_when_changed``): while AD is
  authoritative, an on-prem edit reaches EXO at the next sync and moves that stamp, so it is never earlier than
  the on-prem edit it reflects. It also moves for cloud-side and identity changes, so the check errs towards
  blocking. It cannot see an on-prem edit that has not synced yet, nor one made after the last inventory read:
  the runner re-checks the same rule (``quiet_period_end``) just before each flip, with the pre-flip read of
  WhenChangedUTC and AD's own change time of the user. A mailbox without the stamp gets a warning.
  The quiet period applies to moves to the cloud only (Microsoft's rule protects the flip to cloud-managed).
- *Open help-desk change requests* block a member: the request was validated and routed for the authority the
  mailbox has now, and applying it on the other side of a flip would write the wrong system.
- *Cloud-managed count after the wave*: the tenant's cloud-managed mailboxes now, plus the members still pending
  in other submitted/approved/running waves to the cloud, plus this wave's eligible members. Waves back to AD
  are not subtracted (the ceiling is a limit, so the estimate errs high).
"""

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db.models import Subquery
from django.utils import timezone

from soa.attributes import BY_AD, BY_EXO, EXCHANGE_ATTRIBUTES
from soa.choices import (
    CHANGE_OPEN_STATES,
    MEMBER_OPEN_STATES,
    TARGET_AUTHORITY,
    WAVE_CLAIMING_STATES,
    Authority,
    ChangeState,
    WaveDirection,
)
from soa.models import ChangeRequest, ConsumerApplication, Mailbox, PilotWave, WaveMember
from soa.values import drifted_attributes

SUPPORTED_RECIPIENT_TYPES = frozenset({"UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox"})

# Settings (read at each run, so an administrator's change applies to the next pre-flight).


class Code(StrEnum):
    """Every finding pre-flight can produce."""

    # blocking, per member
    NOT_DIR_SYNCED = "NOT_DIR_SYNCED"
    UNSUPPORTED_RECIPIENT_TYPE = "UNSUPPORTED_RECIPIENT_TYPE"
    ALREADY_IN_TARGET_STATE = "ALREADY_IN_TARGET_STATE"
    IN_OTHER_WAVE = "IN_OTHER_WAVE"
    OPEN_CHANGE_REQUEST = "OPEN_CHANGE_REQUEST"
    MISSING_IN_EXO = "MISSING_IN_EXO"
    MISSING_IN_AD = "MISSING_IN_AD"
    RECENT_ON_PREM_CHANGE = "RECENT_ON_PREM_CHANGE"
    # warnings, per member
    LAST_CHANGE_UNKNOWN = "LAST_CHANGE_UNKNOWN"
    WEAK_PAIRING = "WEAK_PAIRING"
    EXO_VALUES_WIN = "EXO_VALUES_WIN"
    AD_VALUES_WIN = "AD_VALUES_WIN"
    CONSUMER_ATTRIBUTE_STALE = "CONSUMER_ATTRIBUTE_STALE"
    # about the wave as a whole
    CLOUD_MANAGED_NEAR_CEILING = "CLOUD_MANAGED_NEAR_CEILING"
    CLOUD_MANAGED_CEILING_EXCEEDED = "CLOUD_MANAGED_CEILING_EXCEEDED"


@dataclass(frozen=True)
class Finding:
    code: Code
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, "detail": dict(self.detail)}


@dataclass
class Findings:
    """The findings about one member (or about the wave as a whole)."""

    blocking: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return bool(self.blocking)

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        return {"blocking": [f.as_json() for f in self.blocking], "warnings": [f.as_json() for f in self.warnings]}


@dataclass(frozen=True)
class Context:
    """Everything the checks need besides the mailbox itself."""

    direction: str
    now: dt.datetime
    quiet_period: dt.timedelta
    other_waves: Mapping[int, str]  # mailbox id -> name of the other open wave holding it
    stale_consumers: Mapping[str, tuple[str, ...]]  # LDAP attribute -> applications reading it (not written back)
    cloud_managed_now: int
    cloud_pending_elsewhere: int
    ceiling: int
    warn_ratio: float
    open_changes: Mapping[int, tuple[int, str]] = field(default_factory=dict)  # mailbox id -> (request id, state)


@dataclass
class Report:
    """The pre-flight of a whole wave: per-member findings, wave findings and their summary."""

    context: Context
    members: dict[int, Findings]  # by mailbox id
    wave: Findings

    @property
    def eligible(self) -> int:
        return sum(1 for findings in self.members.values() if not findings.blocked)

    def acknowledge(self) -> list[str]:
        """Warning codes on eligible members or on the wave: what an approver must acknowledge."""
        codes = {f.code for f in self.wave.warnings}
        for findings in self.members.values():
            if not findings.blocked:
                codes.update(f.code for f in findings.warnings)
        return sorted(str(code) for code in codes)

    def summary(self) -> dict[str, Any]:
        blocking: Counter[str] = Counter()
        warnings: Counter[str] = Counter()
        for findings in self.members.values():
            blocking.update({str(code) for code in (f.code for f in findings.blocking)})
            warnings.update({str(code) for code in (f.code for f in findings.warnings)})
        return {
            "members": len(self.members),
            "eligible": self.eligible,
            "blocked": len(self.members) - self.eligible,
            "with_warnings": sum(1 for f in self.members.values() if f.warnings and not f.blocked),
            "blocking": dict(sorted(blocking.items())),  # members per code
            "warnings": dict(sorted(warnings.items())),
        }

    def as_json(self) -> dict[str, Any]:
        """The wave-level report (members' findings are stored on their WaveMember rows)."""
        ctx = self.context
        return {
            "computed_at": ctx.now.isoformat(),
            "direction": ctx.direction,
            "parameters": {
                "quiet_period_hours": ctx.quiet_period.total_seconds() / 3600,
                "cloud_managed_ceiling": ctx.ceiling,
                "cloud_managed_now": ctx.cloud_managed_now,
                "cloud_pending_elsewhere": ctx.cloud_pending_elsewhere,
            },
            "summary": self.summary(),
            "wave": self.wave.as_json(),
            "acknowledge": self.acknowledge(),
        }


# -- the checks -------------------------------------------------------------------------------------------------


def check_member(mailbox: Mailbox, ctx: Context) -> Findings:
    """Every finding about one mailbox for a wave in ``ctx.direction`` (all checks run; none hides another)."""
    found = Findings()
    block, warn = found.blocking.append, found.warnings.append
    to_cloud = ctx.direction == WaveDirection.TO_CLOUD
    if not mailbox.is_dir_synced:
        block(Finding(Code.NOT_DIR_SYNCED, "Not synchronised from AD (IsDirSynced is false): there is no "
                      "on-premises authority to move."))  # fmt: skip
    if mailbox.recipient_type_details not in SUPPORTED_RECIPIENT_TYPES:
        kind = mailbox.recipient_type_details or "unknown"
        block(Finding(
            Code.UNSUPPORTED_RECIPIENT_TYPE,
            f"Recipient type {kind} is not supported; only user, shared, room and equipment mailboxes can move.",
            {"recipient_type": kind},
        ))  # fmt: skip
    target = TARGET_AUTHORITY[ctx.direction]
    if mailbox.authority == target:
        block(Finding(
            Code.ALREADY_IN_TARGET_STATE,
            f"Already mastered in {Authority(target).label}: nothing to move.", {"authority": mailbox.authority},
        ))  # fmt: skip
    if mailbox.pk in ctx.other_waves:
        other = ctx.other_waves[mailbox.pk]
        block(Finding(Code.IN_OTHER_WAVE, f"Already in the open wave “{other}”.", {"wave": other}))
    if mailbox.pk in ctx.open_changes:
        request_id, state = ctx.open_changes[mailbox.pk]
        block(Finding(
            Code.OPEN_CHANGE_REQUEST,
            f"Help-desk change request #{request_id} is {ChangeState(state).label.lower()}; it must be applied, "
            "rejected or cancelled before the mailbox's authority moves.",
            {"change_request": request_id, "state": state},
        ))  # fmt: skip
    if not mailbox.in_exo:
        block(Finding(Code.MISSING_IN_EXO, "Not found in Exchange Online at the last inventory."))
    if not mailbox.in_ad:
        block(Finding(Code.MISSING_IN_AD, "Not found in Active Directory at the last inventory."))
    if mailbox.in_exo and mailbox.in_ad and mailbox.weakly_paired:
        warn(Finding(
            Code.WEAK_PAIRING,
            f"The AD user and the Exchange mailbox were paired by {mailbox.get_pairing_display()}: AD holds no "
            "msDS-ExternalDirectoryObjectID and Entra ID did not confirm the source anchor. Check that they are the "
            "same person before moving authority.",
            {"pairing": mailbox.pairing},
        ))  # fmt: skip
    if to_cloud:
        _check_quiet_period(mailbox, ctx, block, warn)
    if mailbox.in_exo and mailbox.in_ad:
        _check_differences(mailbox, ctx, warn)
    if to_cloud:
        for ldap_name, applications in ctx.stale_consumers.items():
            warn(Finding(
                Code.CONSUMER_ATTRIBUTE_STALE,
                f"{ldap_name} is read from AD by {', '.join(applications)}; this installation does not write it "
                "back, so AD's copy goes stale once Exchange Online holds authority.",
                {"attribute": ldap_name, "applications": list(applications)},
            ))  # fmt: skip
    return found


def quiet_period_end(
    last_changes: Iterable[dt.datetime | None], quiet_period: dt.timedelta
) -> tuple[dt.datetime, dt.datetime] | None:
    """The quiet-period rule, for pre-flight and for the runner just before a flip: the latest of the known change
    times and when the quiet period after it ends (a mailbox may move from then on); None when none is known."""
    known = [when for when in last_changes if when is not None]
    if not known:
        return None
    latest = max(known)
    return latest, latest + quiet_period


def quiet_period_refusal(last_change: dt.datetime, ends: dt.datetime, quiet_period: dt.timedelta) -> str:
    """Why a mailbox changed at ``last_change`` may not move before ``ends``."""
    return (
        f"Changed at {last_change:%Y-%m-%d %H:%M} UTC, within the quiet period of {_hours(quiet_period)} after an "
        f"on-premises change (Microsoft advises a sync cycle plus 24 hours); it can move from {ends:%Y-%m-%d %H:%M} "
        "UTC."
    )


def _check_quiet_period(mailbox: Mailbox, ctx: Context, block, warn) -> None:
    found = quiet_period_end([mailbox.exo_when_changed], ctx.quiet_period)
    if found is None:
        warn(Finding(Code.LAST_CHANGE_UNKNOWN, "The time of the last change is unknown (Exchange Online gave no "
                     "WhenChanged); make sure nobody edited it on-premises in the last "
                     f"{_hours(ctx.quiet_period)}."))  # fmt: skip
        return
    changed, ready = found
    if ctx.now < ready:
        block(Finding(
            Code.RECENT_ON_PREM_CHANGE,
            quiet_period_refusal(changed, ready, ctx.quiet_period),
            {"last_change": changed.isoformat(), "eligible_from": ready.isoformat()},
        ))  # fmt: skip


def _check_differences(mailbox: Mailbox, ctx: Context, warn) -> None:
    names = drifted_attributes(mailbox.exo_values, mailbox.ad_values)
    if not names:
        return
    diff = [
        {"attribute": name, "ad_name": BY_EXO[name].ad, "exo": mailbox.exo_values.get(name),
         "ad": mailbox.ad_values.get(name)}
        for name in names
    ]  # fmt: skip
    listed = ", ".join(names)
    if ctx.direction == WaveDirection.TO_CLOUD:
        warn(Finding(
            Code.EXO_VALUES_WIN,
            f"AD and Exchange Online differ on {listed}: Exchange Online's values become authoritative and AD's "
            "will no longer reach Exchange Online.",
            {"differences": diff},
        ))  # fmt: skip
    else:
        warn(Finding(
            Code.AD_VALUES_WIN,
            f"AD and Exchange Online differ on {listed}: at the next sync AD's values would overwrite Exchange "
            "Online's; the revert writes the cloud values into AD before flipping.",
            {"differences": diff},
        ))  # fmt: skip


def check_wave(eligible: int, ctx: Context) -> Findings:
    """Findings about the wave as a whole: the tenant's cloud-managed count after it, against the ceiling."""
    found = Findings()
    if ctx.direction != WaveDirection.TO_CLOUD:
        return found
    after = ctx.cloud_managed_now + ctx.cloud_pending_elsewhere + eligible
    detail = {"after": after, "ceiling": ctx.ceiling, "now": ctx.cloud_managed_now,
              "pending_elsewhere": ctx.cloud_pending_elsewhere, "this_wave": eligible}  # fmt: skip
    if after > ctx.ceiling:
        found.blocking.append(Finding(
            Code.CLOUD_MANAGED_CEILING_EXCEEDED,
            f"The tenant would have {after:,} cloud-managed mailboxes, above the ceiling of {ctx.ceiling:,}; "
            f"remove at least {after - ctx.ceiling:,} members.",
            detail,
        ))  # fmt: skip
    elif after >= ctx.ceiling * ctx.warn_ratio:
        found.warnings.append(Finding(
            Code.CLOUD_MANAGED_NEAR_CEILING,
            f"The tenant would have {after:,} cloud-managed mailboxes, close to the ceiling of {ctx.ceiling:,}.",
            detail,
        ))  # fmt: skip
    return found


def evaluate(mailboxes: Iterable[Mailbox], ctx: Context) -> Report:
    """Run every check over the members and the wave."""
    members = {mailbox.pk: check_member(mailbox, ctx) for mailbox in mailboxes}
    report = Report(context=ctx, members=members, wave=Findings())
    report.wave = check_wave(report.eligible, ctx)
    return report


def _hours(period: dt.timedelta) -> str:
    hours = period.total_seconds() / 3600
    return f"{hours:g} hours"


# -- the database side --------------------------------------------------------------------------------------------


def stale_consumer_attributes() -> dict[str, tuple[str, ...]]:
    """Exchange attributes that registered applications read and this installation does not write back.

    Names outside the attribute map are not judged: identity attributes stay mastered in AD, and Exchange
    attributes the portal does not map are beyond what it can promise.
    """
    readers: dict[str, list[str]] = {}
    exchange = {attribute.ad for attribute in EXCHANGE_ATTRIBUTES}
    for application in ConsumerApplication.objects.order_by("name"):
        for name in application.attributes:
            attribute = BY_AD.get(str(name).lower())
            if attribute is None or attribute.ad not in exchange or attribute.written_back:
                continue
            readers.setdefault(attribute.ad, [])
            if application.name not in readers[attribute.ad]:
                readers[attribute.ad].append(application.name)
    return {name: tuple(apps) for name, apps in sorted(readers.items())}


def build_context(wave: PilotWave, *, now: dt.datetime | None = None) -> Context:
    """Read what the checks need for ``wave`` (its other-wave overlaps, the tenant counts, the registry)."""
    this_wave = wave.members.values("mailbox_id")
    other_waves = dict(
        WaveMember.objects.filter(mailbox_id__in=Subquery(this_wave), wave__state__in=WAVE_CLAIMING_STATES)
        .exclude(wave=wave)
        .exclude(excluded=True)
        .values_list("mailbox_id", "wave__name")
    )
    open_changes = {
        mailbox_id: (request_id, state)
        for request_id, mailbox_id, state in ChangeRequest.objects.filter(
            mailbox_id__in=Subquery(this_wave), state__in=CHANGE_OPEN_STATES
        ).values_list("pk", "mailbox_id", "state")
    }
    to_cloud = wave.direction == WaveDirection.TO_CLOUD
    pending = 0
    if to_cloud:
        pending = (
            WaveMember.objects.filter(
                wave__state__in=WAVE_CLAIMING_STATES,
                wave__direction=WaveDirection.TO_CLOUD,
                excluded=False,
                state__in=MEMBER_OPEN_STATES,
            )  # fmt: skip
            .exclude(wave=wave)
            .count()
        )
    return Context(
        direction=wave.direction,
        now=now or timezone.now(),
        quiet_period=dt.timedelta(hours=settings.WAVE_QUIET_PERIOD_HOURS),
        other_waves=other_waves,
        stale_consumers=stale_consumer_attributes() if to_cloud else {},
        cloud_managed_now=Mailbox.objects.filter(authority=Authority.CLOUD).count(),
        cloud_pending_elsewhere=pending,
        ceiling=settings.WAVE_CLOUD_MANAGED_CEILING,
        warn_ratio=settings.WAVE_CLOUD_MANAGED_WARN_RATIO,
        open_changes=open_changes,
    )
