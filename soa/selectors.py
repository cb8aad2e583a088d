"""Reads of the domain, each already limited to what the asking user may see."""

import datetime as dt
import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db.models import CharField, Count, Exists, F, Func, Min, OuterRef, Q, QuerySet, Value
from django.utils import timezone

from portal.cursors import decode_cursor, encode_cursor
from portal.dn import InvalidDn, normalize_dn, rdn_values
from portal.models import AuditEvent
from portal.roles import Action, may, scope_dns, scope_filter, subtree_filter
from soa.choices import CHANGE_OPEN_STATES, WAVE_OPEN_STATES, Authority, Decision, MemberState, WaveState
from soa.models import (
    AcceptedDomain,
    Approval,
    ChangeRequest,
    ConsumerApplication,
    Mailbox,
    MailboxAddress,
    MailboxNameWord,
    PilotWave,
    WaveMember,
)

# sort key -> (field, descending)
SORTS: dict[str, tuple[str, bool]] = {
    "name": ("display_name", False),
    "-name": ("display_name", True),
    "upn": ("upn", False),
    "-upn": ("upn", True),
    "department": ("department", False),
    "-department": ("department", True),
}
# How long the OU picker's tree is reused: building it groups every mailbox in scope by OU.
OU_TREE_SECONDS = 300


def mailbox_list(*, user, action: Action = Action.MAILBOX_VIEW) -> QuerySet[Mailbox]:
    """Mailboxes the user may perform ``action`` on (their OU scopes for that action)."""
    return Mailbox.objects.filter(scope_filter(user, action, "dn_norm", reversed_index=True))


def mailbox_get(*, user, pk: int, action: Action = Action.MAILBOX_VIEW) -> Mailbox | None:
    """One mailbox, or None when it does not exist or lies outside the user's scope (callers answer 404 alike)."""
    return mailbox_list(user=user, action=action).filter(pk=pk).first()


def mailbox_counts(*, user) -> dict[str, int]:
    """Totals by authority over the mailboxes the user may see, in one query."""
    return mailbox_list(user=user).aggregate(
        total=Count("id"),
        cloud=Count("id", filter=Q(authority=Authority.CLOUD)),
        on_prem=Count("id", filter=Q(authority=Authority.ON_PREM)),
        drifted=Count("id", filter=Q(has_drift=True)),
    )


def mailbox_search(
    *,
    user,
    query: str = "",
    authority: str = "",
    recipient_type: str = "",
    ou: str = "",
    drift: bool | None = None,
    department: str = "",
) -> QuerySet[Mailbox]:
    """Scoped mailboxes matching the filters and, by prefix, any word of the name, the UPN or any address."""
    if ou:
        try:
            base = normalize_dn(ou)
        except InvalidDn:
            return Mailbox.objects.none()

    bases = scope_dns(user, Action.MAILBOX_VIEW)

    def where(path: str = "") -> Q:
        """The scope (as scope_filter) and every filter but the text, on the mailbox at ``path`` ("" or "mailbox__")."""
        condition = Q()
        if bases is not None:
            condition = Q(pk__in=[])
            for scope in bases:
                condition |= subtree_filter(f"{path}dn_norm", scope, reversed_index=True)
        if authority:
            condition &= Q(**{f"{path}authority": authority})
        if recipient_type:
            condition &= Q(**{f"{path}recipient_type_details": recipient_type})
        if ou:
            condition &= subtree_filter(f"{path}ou_norm", base, reversed_index=True)
        if drift is not None:
            condition &= Q(**{f"{path}has_drift": drift})
        if department.strip():
            condition &= Q(**{f"{path}department__iexact": department.strip()})
        return condition

    mailboxes = Mailbox.objects.filter(where())
    query = query.strip()
    if query:
        text = query.lower()
        address = text.split(":", 1)[1] if ":" in text else text
        # A UNION of index range scans: an OR across the columns would make PostgreSQL scan the table. The name
        # matches from its first word (search_name) or from any later one (MailboxNameWord). Each branch carries
        # the other filters, so a common word within a narrow filter (one OU, one department) leaves a short
        # union instead of every mailbox the word matches.
        matches = (
            Mailbox.objects.order_by().filter(where(), search_name__startswith=text).values("pk")
            .union(
                MailboxNameWord.objects.order_by().filter(where("mailbox__"), suffix__startswith=text)
                .values("mailbox_id"),
                Mailbox.objects.order_by().filter(where(), upn__startswith=text).values("pk"),
                MailboxAddress.objects.order_by().filter(where("mailbox__"), address__startswith=address)
                .values("mailbox_id"),
            )
        )  # fmt: skip
        mailboxes = mailboxes.filter(pk__in=matches)
    return mailboxes


@dataclass(frozen=True)
class OuChoice:
    """One OU of the picker: its normalised DN (what the filter takes), its own name as AD spells it, its depth
    below the domain, and the mailboxes in scope in it and below."""

    dn: str
    label: str
    depth: int
    mailboxes: int


def ou_tree(*, user) -> list[OuChoice]:
    """The OUs holding the user's mailboxes, with every OU above them up to the domain, as a tree in depth-first
    order (each parent before its children, siblings by name); reused for OU_TREE_SECONDS."""
    # Keyed by the scope itself, not only the user: a scope narrowed meanwhile never shows OUs now outside it.
    scope = hashlib.sha256(str(scope_filter(user, Action.MAILBOX_VIEW, "dn_norm")).encode()).hexdigest()[:32]
    key = f"soa:ou-tree:{user.pk}:{scope}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    groups = (
        mailbox_list(user=user).exclude(ou_norm="").order_by().values("ou_norm")
        .annotate(count=Count("id"), sample=Min("dn"))
    )  # fmt: skip
    nodes: dict[str, list] = {}  # normalised DN -> [label, mailboxes in it and below]
    for group in groups:
        parts = group["ou_norm"].split(",")  # a literal comma is escaped in the normal form: each is a separator
        try:
            names = rdn_values(group["sample"])[1:]
        except InvalidDn:
            names = []
        if len(names) != len(parts):
            names = [part.split("=", 1)[-1] for part in parts]
        for index, part in enumerate(parts):
            if part.startswith("dc="):
                break
            node = nodes.setdefault(",".join(parts[index:]), [names[index], 0])
            node[1] += group["count"]

    def path(dn: str) -> list[str]:
        return [part for part in reversed(dn.split(",")) if not part.startswith("dc=")]

    tree = [OuChoice(dn, nodes[dn][0], len(path(dn)) - 1, nodes[dn][1]) for dn in sorted(nodes, key=path)]
    cache.set(key, tree, OU_TREE_SECONDS)
    return tree


# The list counts matches up to this many and says "more than" beyond: counting every mailbox of a million-mailbox
# tenant on each page costs 80 ms on PostgreSQL (bench/bench_mailbox_search.py), a bounded count about 3.
COUNT_CAP = 10_000


def capped_count(mailboxes: QuerySet[Mailbox], cap: int | None = None) -> tuple[int, bool]:
    """How many ``mailboxes`` there are, counting at most ``cap`` (COUNT_CAP) + 1: (the count, whether it passed
    ``cap``; then the count is ``cap``)."""
    cap = COUNT_CAP if cap is None else cap
    counted = mailboxes.order_by()[: cap + 1].count()
    return (cap, True) if counted > cap else (counted, False)


@dataclass
class Page:
    """One page of a keyset-paginated listing: fast however deep, because it never counts rows to skip."""

    items: list[Mailbox]
    next_cursor: str | None
    prev_cursor: str | None


def paginate(
    mailboxes: QuerySet[Mailbox], *, sort: str, after: str = "", before: str = "", size: int = 50, few: bool = False
) -> Page:
    """Keyset pagination on (sort field, id). ``after``/``before`` are cursors from a previous Page; one the page
    did not write raises portal.cursors.BadCursor. ``few``: the caller knows ``mailboxes`` are few (its capped count
    did not reach the cap), so they are read by their filter and sorted rather than met along the sort's index."""
    field, descending = SORTS.get(sort, SORTS["name"])
    backwards = bool(before) and not after
    cursor = decode_cursor(after or before, (str, int)) if (after or before) else None
    # Walking backwards reverses the order, then the page is flipped back.
    reverse = descending != backwards
    key = _unindexed(field) if few else F(field)
    order = [key.desc(), "-id"] if reverse else [key.asc(), "id"]
    if cursor:
        value, pk = cursor
        lookup = "lt" if reverse else "gt"
        # The leading inclusive bound lets the (field, id) index start the scan at the cursor; the OR alone
        # would not, and the page would cost a scan of everything before it.
        mailboxes = mailboxes.filter(
            Q(**{f"{field}__{lookup}e": value}), Q(**{f"{field}__{lookup}": value}) | Q(**{f"id__{lookup}": pk})
        )
    rows = list(mailboxes.order_by(*order)[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    first, last = (rows[0], rows[-1]) if rows else (None, None)
    has_next = more if not backwards else True
    has_prev = (more if backwards else bool(cursor)) and first is not None
    return Page(
        items=rows,
        next_cursor=encode_cursor(getattr(last, field), last.pk) if last is not None and has_next else None,
        prev_cursor=encode_cursor(getattr(first, field), first.pk) if has_prev else None,
    )


def _unindexed(field: str) -> Func:
    """``field`` in the same order, as an expression no index holds. Given a filter that keeps a few thousand of a
    million mailboxes, PostgreSQL assumes they are spread evenly along the sort's index and walks it to meet the
    first page's rows early; when they are not (one OU, one department), that walk reads a large part of the table
    (160 ms to 3.7 s in bench/bench_mailbox_search.py). Without an index in that order it reads the rows by their
    filter's index and sorts them."""
    return Func(F(field), Value(""), template="(%(expressions)s)", arg_joiner=" || ", output_field=CharField())


# -- pilot waves ---------------------------------------------------------------------------------------------------
# Waves are tenant-level governance records: every WAVE_VIEW holder sees every wave and its members, whatever their
# OU scope, so an approver sees all of what they are asked to decide on. Acting on a wave is scoped by the services
# (building: every member inside the builder's scope; deciding: every included member inside the approver's).


def wave_list(*, user, state: str = "", mine: bool = False) -> QuerySet[PilotWave]:
    """Waves the user may read, newest first, with member counts (``member_count``, ``excluded_count``); ``mine``:
    only those the user created or submitted."""
    if not may(user, Action.WAVE_VIEW):
        return PilotWave.objects.none()
    waves = PilotWave.objects.select_related("created_by", "submitted_by").annotate(
        member_count=Count("members", distinct=True),
        excluded_count=Count("members", filter=Q(members__excluded=True), distinct=True),
    )
    if state:
        waves = waves.filter(state=state)
    if mine:
        waves = waves.filter(Q(created_by=user) | Q(submitted_by=user))
    return waves.order_by("-id")


# A wave's own events that tell its story on its page (each batch's claim and release would drown them).
_WAVE_NOISE = ("soa.wave.batch_claimed", "soa.wave.batch_released")


def wave_history(*, user, wave_id: int) -> QuerySet[AuditEvent]:
    """The audit events recorded on the wave itself, oldest first: created, changed, members chosen, submitted,
    decided, started, paused and why, resumed, completed, cancelled, cloned."""
    if not may(user, Action.WAVE_VIEW):
        return AuditEvent.objects.none()
    events = AuditEvent.objects.filter(object_type=PilotWave._meta.label_lower, object_id=str(wave_id))
    return events.exclude(action__in=_WAVE_NOISE).order_by("id")


def wave_get(*, user, pk: int) -> PilotWave | None:
    """One wave, or None when it does not exist or the user may not read waves (callers answer 404 alike)."""
    return wave_list(user=user).filter(pk=pk).first()


def wave_members(*, user, wave_id: int) -> QuerySet[WaveMember]:
    """The members of a wave the user may read, with their mailboxes, in name order."""
    if not may(user, Action.WAVE_VIEW):
        return WaveMember.objects.none()
    return WaveMember.objects.filter(wave_id=wave_id).select_related("mailbox").order_by("mailbox__display_name", "id")


def wave_approvals(*, user, wave_id: int) -> QuerySet[Approval]:
    """Every decision on a wave, all submission rounds, oldest first."""
    if not may(user, Action.WAVE_VIEW):
        return Approval.objects.none()
    return Approval.objects.filter(wave_id=wave_id).select_related("approver").order_by("decided_at", "id")


def approvable_waves(*, user) -> QuerySet[PilotWave]:
    """Submitted, unexpired waves the user may decide on now: holds WAVE_APPROVE with every included member in
    scope, did not create, submit or choose members of the wave, and has not decided on this submission yet.
    (The same rules as soa.services.approvals.approval_refusal, as one query.)"""
    if not may(user, Action.WAVE_APPROVE):
        return PilotWave.objects.none()
    waves = (
        PilotWave.objects.filter(state=WaveState.SUBMITTED, approval_expires_at__gt=timezone.now())
        .exclude(created_by=user)
        .exclude(submitted_by=user)
        .exclude(Exists(WaveMember.objects.filter(wave=OuterRef("pk"), added_by=user)))
        .exclude(
            Exists(Approval.objects.filter(wave=OuterRef("pk"), round=OuterRef("submission_round"), approver=user))
        )
    )
    scope = scope_filter(user, Action.WAVE_APPROVE, "mailbox__dn_norm")
    if scope:  # an empty Q is a tenant-wide grant: nothing is outside it
        outside = WaveMember.objects.filter(wave=OuterRef("pk"), excluded=False).exclude(scope)
        waves = waves.exclude(Exists(outside))
    return waves.order_by("approval_expires_at", "id")


# What a dashboard calls "soon": an approval window closing within this long.
EXPIRING_SOON = dt.timedelta(hours=24)
# Waves an operator follows on the dashboard: open ones (WAVE_OPEN_STATES), and ones that ended with errors lately.
_ENDED_WITH_ERRORS_RECENTLY = dt.timedelta(days=14)


def _with_approvals(waves: QuerySet[PilotWave]) -> QuerySet[PilotWave]:
    """``approvals_given``: approving decisions of the wave's current submission round."""
    current = Q(approvals__round=F("submission_round"), approvals__decision=Decision.APPROVE)
    return waves.annotate(approvals_given=Count("approvals", filter=current, distinct=True))


def waves_awaiting_decision(*, user) -> QuerySet[PilotWave]:
    """The waves the user may decide on now (approvable_waves), each with ``approvals_given``, soonest expiry first."""
    return _with_approvals(approvable_waves(user=user))


def waves_decided_awaiting_others(*, user) -> QuerySet[PilotWave]:
    """Submitted, unexpired waves on whose current round the user has approved, still short of their quorum."""
    if not may(user, Action.WAVE_APPROVE):
        return PilotWave.objects.none()
    mine = Approval.objects.filter(wave=OuterRef("pk"), round=OuterRef("submission_round"), approver=user)
    waves = PilotWave.objects.filter(state=WaveState.SUBMITTED, approval_expires_at__gt=timezone.now())
    return _with_approvals(waves.filter(Exists(mine))).order_by("approval_expires_at", "id")


def operator_waves(*, user) -> QuerySet[PilotWave]:
    """The waves the user created or submitted that are open, or ended with errors in the last two weeks, with their
    members counted by state (``member_count``, ``done_count``, ``failed_count``, ``running_count``)."""
    if not may(user, Action.WAVE_VIEW):
        return PilotWave.objects.none()
    recent = timezone.now() - _ENDED_WITH_ERRORS_RECENTLY
    included = Q(members__excluded=False)
    return (
        PilotWave.objects.filter(Q(created_by=user) | Q(submitted_by=user))
        .filter(Q(state__in=WAVE_OPEN_STATES) | Q(state=WaveState.COMPLETED_WITH_ERRORS, finished_at__gte=recent))
        .annotate(
            member_count=Count("members", filter=included, distinct=True),
            done_count=Count("members", filter=included & Q(members__state=MemberState.DONE), distinct=True),
            failed_count=Count("members", filter=included & Q(members__state=MemberState.FAILED), distinct=True),
            running_count=Count("members", filter=included & Q(members__state=MemberState.RUNNING), distinct=True),
        )
        .order_by("-id")
    )


def changes_requested_by(*, user, open_only: bool = False) -> QuerySet[ChangeRequest]:
    """The change requests the user made, newest first, on mailboxes the user may still see."""
    if not may(user, Action.MAILBOX_VIEW):
        return ChangeRequest.objects.none()
    changes = ChangeRequest.objects.filter(requested_by=user, mailbox__in=mailbox_list(user=user))
    if open_only:
        changes = changes.filter(state__in=CHANGE_OPEN_STATES)
    return changes.select_related("mailbox").order_by("-created_at", "-id")


def consumer_applications(*, user) -> QuerySet[ConsumerApplication]:
    """The registry of on-prem applications reading AD (for wave readers and administrators)."""
    if not (may(user, Action.WAVE_VIEW) or may(user, Action.PORTAL_CONFIGURE)):
        return ConsumerApplication.objects.none()
    return ConsumerApplication.objects.order_by("name")


# -- change requests -----------------------------------------------------------------------------------------------


def change_requests_for(*, user, mailbox: Mailbox) -> QuerySet[ChangeRequest]:
    """The change requests of one mailbox, newest first, when the user may see that mailbox; none otherwise."""
    if not mailbox_list(user=user).filter(pk=mailbox.pk).exists():
        return ChangeRequest.objects.none()
    return ChangeRequest.objects.filter(mailbox=mailbox).select_related("requested_by", "decided_by")


def accepted_domains_known(*, now: dt.datetime | None = None) -> frozenset[str] | None:
    """The tenant's accepted domains (lower case) while the cached list is younger than ACCEPTED_DOMAINS_TTL_SECONDS;
    None when it was never read or is older: validation then refuses SMTP addresses rather than guess."""
    now = now or timezone.now()
    rows = list(AcceptedDomain.objects.values_list("domain", "fetched_at"))
    if not rows:
        return None
    oldest = min(fetched_at for _, fetched_at in rows)
    if now - oldest > dt.timedelta(seconds=settings.ACCEPTED_DOMAINS_TTL_SECONDS):
        return None
    return frozenset(domain.lower() for domain, _ in rows)
