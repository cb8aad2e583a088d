"""A mailbox's history pages: its timeline (every event that touched it, grouped into chains by correlation id), its
values as of a past moment, and what changed between two moments (the rules: soa.mailbox_history).

The timeline's events are found by the object they name, through the (object_type, object_id) index: the mailbox
itself and the change requests, wave members, writeback tasks and drift findings that belong to it, each found by
its own mailbox index; the drift scans and inventory runs whose events name the mailbox inside their content add a
few more (scans by the mailbox's findings, imports by the action index).
"""

import datetime as dt
import re

from django.db.models import F, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from portal.decorators import action_required
from portal.models import AuditEvent
from portal.roles import Action, OutsideScope, may
from portal.views.audit_objects import BELONGS_TO_MAILBOX, MAILBOX, changed_keys
from soa import mailbox_history as history
from soa.forms_history import CompareForm, MomentForm
from soa.models import Mailbox, PilotWave, WaveMember
from soa.selectors import mailbox_get
from soa.services.undo import undoable_event_ids
from writeback.models import DriftFinding

PAGE_SIZE = 100
INVENTORY_CHANGED = "writeback.inventory.changed"
SCAN_ACTIONS = ("writeback.drift.found", "writeback.drift.cleared")
WAVE_ACTIONS = (
    "soa.wave.submitted", "soa.wave.approved", "soa.wave.rejected", "soa.wave.started", "soa.wave.paused",
    "soa.wave.resumed", "soa.wave.cancelled", "soa.wave.completed",
)  # fmt: skip
# What the point-in-time page reads: the actions soa.mailbox_history draws values from.
VALUE_ACTIONS = (
    "soa.change.requested", "soa.change.applied", "writeback.task.completed", "writeback.drift.found",
    "writeback.drift.resolved", "soa.wave.member_done", INVENTORY_CHANGED,
)  # fmt: skip


def _visible_mailbox(request: HttpRequest, pk: int, action: Action = Action.MAILBOX_VIEW) -> Mailbox:
    mailbox = mailbox_get(user=request.user, pk=pk)
    if mailbox is None or not may(request.user, action, mailbox.dn):
        raise OutsideScope("mailbox", action)
    return mailbox


def mailbox_event_parts(mailbox: Mailbox, *, imports: bool = True) -> list[Q]:
    """The events that touched ``mailbox`` as filters each served by one index, read one by one (an OR of them made
    PostgreSQL walk the whole table backwards by id): the mailbox's own objects by (object_type, object_id); the import
    page that created it by action and time; with ``imports``, every import page since that changed its authority or
    presence, by action and then by the page's JSON (has_key works on every backend), which reads each import page."""
    objects = Q(object_type=MAILBOX, object_id=str(mailbox.pk))
    for object_type, model in BELONGS_TO_MAILBOX.items():
        ids = [str(pk) for pk in model.objects.filter(mailbox_id=mailbox.pk).values_list("pk", flat=True)]
        if ids:
            objects |= Q(object_type=object_type, object_id__in=ids)
    scans = DriftFinding.objects.filter(mailbox_id=mailbox.pk, scan_id__isnull=False).values_list("scan_id", flat=True)
    scan_ids = [str(pk) for pk in set(scans)]
    if scan_ids:
        objects |= Q(object_type="writeback.driftscan", object_id__in=scan_ids, action__in=SCAN_ACTIONS)
    # The lifecycle of the waves that hold the mailbox (who submitted, approved and started its flip); their batch
    # events name many members each and are left out.
    waves = [str(pk) for pk in WaveMember.objects.filter(mailbox_id=mailbox.pk).values_list("wave_id", flat=True)]
    if waves:
        objects |= Q(object_type="soa.pilotwave", object_id__in=waves, action__in=WAVE_ACTIONS)
    parts = [objects]
    # The import page that created the mailbox wrote its event at the end of the transaction that inserted the row,
    # and an import's pages run one after another: it is the first import event from the row's creation on (its list
    # of created ids is checked in _names, since a JSON list's containment is not portable).
    creation = (
        AuditEvent.objects.filter(action=INVENTORY_CHANGED, occurred_at__gte=mailbox.created_at)
        .order_by(F("id") + 0)
        .values_list("pk", flat=True)
        .first()
    )
    if creation is not None:
        parts.append(Q(pk=creation))
    if imports:
        changed = Q(after__changed__has_key=str(mailbox.pk))
        parts.append(Q(action=INVENTORY_CHANGED, occurred_at__gte=mailbox.created_at) & changed)
    return parts


# Newest first without the primary key's index: ordered by the key itself, PostgreSQL prefers walking that index
# backwards and filtering every event of the table; by an expression it reads the few rows the filter's index finds.
NEWEST_FIRST = (F("id") + 0).desc()


def newest_events(parts: list[Q], *, exclude: Q | None = None, before: int | None = None, limit: int) -> list:
    """The newest ``limit`` events matching any of ``parts`` (older than event ``before``), newest first."""
    found = {}
    for part in parts:
        events = AuditEvent.objects.filter(part)
        if exclude is not None:
            events = events.exclude(exclude)
        if before is not None:
            events = events.filter(pk__lt=before)
        found.update((event.pk, event) for event in events.order_by(NEWEST_FIRST)[:limit])
    return sorted(found.values(), key=lambda event: -event.pk)[:limit]


def _family_names(user, mailbox: Mailbox) -> tuple[list[str], list[str]]:
    """The families of events the user sees on this mailbox's timeline, and those hidden from them."""
    needs = {name: action for _prefix, name, action in (*history.FAMILIES, ("", *history.DEFAULT_FAMILY))}
    shown, hidden = [], []
    for name, label in history.FAMILY_LABELS.items():
        (shown if may(user, Action(needs[name]), mailbox.dn) else hidden).append(label)
    return shown, hidden


def _hidden_families(user, mailbox: Mailbox) -> Q:
    """The events of the families the user's roles do not show on this mailbox's timeline (a Q to exclude)."""
    hidden = Q(pk__in=[])
    known = Q(pk__in=[])
    for prefix, _name, needs in history.FAMILIES:
        known |= Q(action__startswith=prefix)
        if not may(user, Action(needs), mailbox.dn):
            hidden |= Q(action__startswith=prefix)
    if not may(user, Action(history.DEFAULT_FAMILY[1]), mailbox.dn):
        hidden |= ~known
    return hidden


def _names(event, mailbox: Mailbox) -> bool:
    """Whether an import's event names the mailbox (the first import event after the row's creation may be another
    page's, when the mailbox was not made by an import)."""
    if event.action != INVENTORY_CHANGED or not isinstance(event.after, dict):
        return True
    return mailbox.pk in (event.after.get("created") or []) or str(mailbox.pk) in (event.after.get("changed") or {})


def _describe(event, mailbox: Mailbox) -> None:
    event.family = history.family(event.action)[0]
    before, after = event.before, event.after
    if event.object_type == "writeback.driftscan" and isinstance(after, dict):
        after = {"findings": [f for f in after.get("findings") or [] if f.get("mailbox_id") == mailbox.pk]}
    if event.action == INVENTORY_CHANGED and isinstance(after, dict):
        after = {"side": after.get("side"), "created": mailbox.pk in (after.get("created") or []),
                 "changed": (after.get("changed") or {}).get(str(mailbox.pk))}  # fmt: skip
    event.changes = changed_keys(before, after)
    # The as-of link takes whole seconds: the next one, so the page shows the event's effect (never the future).
    event.just_after = min(event.occurred_at.replace(microsecond=0) + dt.timedelta(seconds=1), timezone.now())


@action_required(Action.MAILBOX_VIEW)
def mailbox_timeline_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Every event that touched the mailbox, newest first, in chains by correlation id; the user's roles decide
    which families of events are shown."""
    mailbox = _visible_mailbox(request, pk)
    older_than = request.GET.get("before", "")
    # An id; anything else (or beyond a bigint) is the newest page.
    before = int(older_than) if re.fullmatch(r"[0-9]{1,18}", older_than) else None
    parts = mailbox_event_parts(mailbox)
    page = newest_events(parts, exclude=_hidden_families(request.user, mailbox), before=before, limit=PAGE_SIZE + 1)
    more, page = len(page) > PAGE_SIZE, page[:PAGE_SIZE]
    rows = [event for event in page if _names(event, mailbox)]
    undoable = undoable_event_ids(request.user, rows)  # help desk reaches undo here: it has no audit list
    for event in rows:
        _describe(event, mailbox)
        event.undoable = event.pk in undoable
    context = {
        "mailbox": mailbox, "chains": history.chains(rows), "more": more, "oldest_id": page[-1].pk if page else None,
        "may_audit": may(request.user, Action.AUDIT_VIEW),
    }  # fmt: skip
    context["shown"], context["hidden"] = _family_names(request.user, mailbox)
    template = "soa/mailbox_history.html#timeline" if request.htmx else "soa/mailbox_history.html"
    return render(request, template, context)


def _observations(mailbox: Mailbox) -> list[history.Observation]:
    """Everything the history shows of the mailbox's values: its value events, its waves' snapshots at submission,
    and the current record (as of its last change)."""
    fields = ("id", "occurred_at", "action", "object_type", "object_id", "before", "after")
    events = [
        event
        for part in mailbox_event_parts(mailbox)
        for event in AuditEvent.objects.filter(part, action__in=VALUE_ACTIONS).only(*fields).order_by(NEWEST_FIRST)
    ]
    members = list(WaveMember.objects.filter(mailbox_id=mailbox.pk).exclude(snapshot={}).select_related("wave"))
    directions = dict(PilotWave.objects.filter(members__mailbox_id=mailbox.pk).values_list("pk", "direction"))
    found = [
        obs
        for event in events
        if _names(event, mailbox)
        for obs in history.observations(event, mailbox_id=mailbox.pk, wave_directions=directions)
    ]
    submissions = AuditEvent.objects.filter(
        object_type="soa.pilotwave", object_id__in=[str(m.wave_id) for m in members], action="soa.wave.submitted"
    ).values_list("object_id", "occurred_at", "pk")
    for member in members:
        taken = parse_datetime(str(member.snapshot.get("taken_at") or "")) or member.wave.submitted_at
        if taken is None or "authority" not in member.snapshot:
            continue
        # The submission's event is written just after the snapshot, in the same transaction.
        event_id = min(
            ((at, pk) for wave, at, pk in submissions if wave == str(member.wave_id) and at >= taken),
            default=(None, None),
        )[1]
        where = f"wave #{member.wave_id} “{member.wave.name}”: snapshot at submission"
        found += history.snapshot_observations(member.snapshot, taken, where, event_id)
    current = {"authority": mailbox.authority, "exo": mailbox.exo_values, "ad": mailbox.ad_values}
    found += history.snapshot_observations(current, mailbox.updated_at, "the portal's current record")
    return found


@action_required(Action.AUDIT_VIEW)
def mailbox_as_of_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The mailbox's Exchange attributes on both sides and its authority at a chosen moment."""
    mailbox = _visible_mailbox(request, pk, Action.AUDIT_VIEW)
    form = MomentForm(request.GET or None)
    moment = None
    if form.is_bound and form.is_valid():
        moment = history.values_at(form.cleaned_data["at"], _observations(mailbox))
    context = {"mailbox": mailbox, "form": form, "moment": moment, "sides": history.SIDES, "may_audit": True}
    return render(request, "soa/mailbox_as_of.html", context)


@action_required(Action.AUDIT_VIEW)
def mailbox_compare_view(request: HttpRequest, pk: int) -> HttpResponse:
    """What changed in the mailbox's values and authority between two moments."""
    mailbox = _visible_mailbox(request, pk, Action.AUDIT_VIEW)
    form = CompareForm(request.GET or None)
    earlier = later = changes = None
    if form.is_bound and form.is_valid():
        found = _observations(mailbox)
        earlier = history.values_at(form.cleaned_data["earlier"], found)
        later = history.values_at(form.cleaned_data["later"], found)
        changes = history.compare(earlier, later)
    context = {"mailbox": mailbox, "form": form, "earlier": earlier, "later": later, "changes": changes,
               "may_audit": True}  # fmt: skip
    return render(request, "soa/mailbox_compare.html", context)
