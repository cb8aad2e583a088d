"""Choosing a draft wave's members: by picking mailboxes, by filter, from a CSV list; and removing them.

Every way in obeys the same rules: only while the wave is a draft, only mailboxes inside the actor's
wave-building scope, all or nothing (a list with one bad id or line adds nothing), mailboxes already in the wave
are left as they are. Each change that adds or removes something records one audit event naming the mailboxes.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from portal.audit import audit_record
from portal.cursors import MAX_ID
from portal.dn import InvalidDn, normalize_dn
from portal.models import User
from portal.roles import Action, scope_filter
from soa.choices import SOURCE_AUTHORITY, Authority, WaveState
from soa.models import Mailbox, PilotWave, WaveMember
from soa.selectors import mailbox_search
from soa.services import Refusal, SoaError, action_refusal, listing, locked_wave, refuse, require_action
from soa.wave_csv import CsvInputError, LineProblem, match_mailboxes, read_entries

_CHUNK = 500


# Bad lines a refusal names; the rest are counted. A page shows no more, however long the list.
PROBLEMS_SHOWN = 100


class CsvImportError(SoaError):
    """A CSV list with lines that cannot be used: ``problems`` names the first PROBLEMS_SHOWN (line number, value,
    reason) in line order, ``problem_count`` counts them all."""

    def __init__(self, problems: list[LineProblem]):
        ordered = sorted(problems, key=lambda problem: problem.line)
        self.problems = ordered[:PROBLEMS_SHOWN]
        self.problem_count = count = len(ordered)
        # The summary heads a page that lists the lines in a table; the message names the first ones itself.
        self.summary = (
            f"{count:,} line{'s' if count > 1 else ''} of the list cannot be used, so nothing was added; fix "
            f"{'them' if count > 1 else 'it'} and upload the list again"
        )
        super().__init__(f"{self.summary}: {listing(ordered, limit=10)}.")


def csv_too_large() -> str:
    """The refusal of a member list past WAVE_CSV_MAX_BYTES."""
    return (
        f"The list is larger than {settings.WAVE_CSV_MAX_BYTES // 1024:,} KB, the most one upload takes; split it "
        "into several lists (or add members by filter)."
    )


@dataclass(frozen=True)
class MembershipChange:
    """What a call did to the wave's members."""

    wave: PilotWave
    changed: int  # members added (or removed)
    unchanged: int = 0  # mailboxes asked for that were already members


def _chunks(items: list) -> Iterable[list]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def members_refusal(actor: User, wave: PilotWave) -> Refusal | None:
    """Why ``actor`` may not change ``wave``'s members now, or None. Each mailbox named is then checked against the
    actor's scope by the service that adds or removes it."""
    refusal = action_refusal(actor, Action.WAVE_BUILD)
    if refusal:
        return refusal
    if wave.state != WaveState.DRAFT:
        hint = " (withdraw it to a draft to change them)" if wave.state == WaveState.SUBMITTED else ""
        return Refusal(
            f"Wave “{wave.name}” is {wave.get_state_display().lower()}; its members can only change while it is a "
            f"draft{hint}.",
            Refusal.STATE,
        )
    return None


def _draft_wave(actor: User, wave_id: int) -> PilotWave:
    require_action(actor, Action.WAVE_BUILD)
    wave = locked_wave(wave_id)
    refuse(members_refusal(actor, wave))
    return wave


def in_build_scope(actor: User, mailbox_ids: Iterable[int]) -> set[int]:
    """The ids among ``mailbox_ids`` that lie inside the actor's wave-building scope."""
    scope = scope_filter(actor, Action.WAVE_BUILD, "dn_norm")
    inside: set[int] = set()
    for chunk in _chunks(sorted(set(mailbox_ids))):
        inside.update(Mailbox.objects.filter(pk__in=chunk).filter(scope).values_list("pk", flat=True))
    return inside


def members_outside_scope(user: User, wave: PilotWave, action: Action, *, include_excluded: bool = False) -> list[str]:
    """UPNs of the wave's members outside the user's scope for ``action`` (excluded members count when asked)."""
    scope = scope_filter(user, action, "mailbox__dn_norm")
    if not scope:
        return []  # a tenant-wide grant: an empty Q matches everything
    members = wave.members.all() if include_excluded else wave.members.filter(excluded=False)
    return list(members.exclude(scope).order_by("mailbox__upn").values_list("mailbox__upn", flat=True))


def add_members(actor: User, wave: PilotWave, mailbox_ids: list[int], how: dict[str, Any]) -> MembershipChange:
    """Add the (known, in-scope, de-duplicated) mailboxes that are not members yet, with one audit event."""
    existing = set(wave.members.values_list("mailbox_id", flat=True))
    new = [pk for pk in mailbox_ids if pk not in existing]
    if not new:
        return MembershipChange(wave=wave, changed=0, unchanged=len(mailbox_ids))
    before = wave.audit_snapshot()
    WaveMember.objects.bulk_create(
        [WaveMember(wave=wave, mailbox_id=pk, added_by=actor) for pk in new], batch_size=1000
    )
    wave.selection = [*wave.selection, {**how, "added": len(new), "already_members": len(mailbox_ids) - len(new)}]
    wave.version += 1
    wave.save(update_fields=["selection", "version", "updated_at"])
    audit_record(
        actor=actor, action="soa.wave.members_added", obj=wave, before=before,
        after={**wave.audit_snapshot(), "how": how, "added_mailbox_ids": new},
    )  # fmt: skip
    return MembershipChange(wave=wave, changed=len(new), unchanged=len(mailbox_ids) - len(new))


def _ids(mailbox_ids: Iterable[int], *, empty: str) -> list[int]:
    """Distinct ids in their given order; a clear refusal for anything that is not a whole number, or none."""
    try:
        wanted = list(dict.fromkeys(int(pk) for pk in mailbox_ids))
    except (TypeError, ValueError):
        raise SoaError("Mailbox ids must be whole numbers.") from None
    if any(not 0 < pk <= MAX_ID for pk in wanted):  # the database cannot even compare one beyond its key column
        raise SoaError("Mailbox ids must be whole numbers from 1 to 2⁶³-1.")
    if not wanted:
        raise SoaError(empty)
    return wanted


@transaction.atomic
def wave_add_members(*, actor: User, wave_id: int, mailbox_ids: Iterable[int]) -> MembershipChange:
    """Add mailboxes picked by id (from the mailbox list). Unknown or out-of-scope ids refuse the whole call."""
    wave = _draft_wave(actor, wave_id)
    wanted = _ids(mailbox_ids, empty="Pick at least one mailbox to add.")
    known: dict[int, str] = {}
    for chunk in _chunks(wanted):
        known.update(Mailbox.objects.filter(pk__in=chunk).values_list("pk", "upn"))
    unknown = [pk for pk in wanted if pk not in known]
    inside = in_build_scope(actor, known)
    outside = [known[pk] for pk in wanted if pk in known and pk not in inside]
    problems = []
    if unknown:
        problems.append(f"no mailbox has id {listing(unknown)}")
    if outside:
        problems.append(f"outside your wave-building scope: {listing(sorted(outside))}")
    if problems:
        # Only a scope problem is the actor's to be refused for (403); an unknown id is a wrong request.
        raise SoaError("Nothing was added: " + "; ".join(problems) + ".", "" if unknown else Refusal.ACTOR)
    return add_members(actor, wave, wanted, {"how": "picked", "count": len(wanted)})


def _filter_matches(
    actor: User, wave: PilotWave, *, query, ou, department, recipient_type, drift, authority
) -> tuple[list[int], dict[str, Any]]:
    """The ids of the mailboxes inside the actor's wave-building scope that match the filters, and the filters as
    recorded; refuses an empty filter (it would add everything) and a malformed OU."""
    query, ou, department = query.strip(), ou.strip(), department.strip()
    if not (query or ou or department or recipient_type or drift is not None):
        raise SoaError("Choose at least one filter (OU, department, recipient type, drift or search text).")
    if ou:
        try:
            normalize_dn(ou)
        except InvalidDn as exc:
            raise SoaError(f"The OU is not a valid distinguished name: {exc}") from None
    if authority is None:
        authority = SOURCE_AUTHORITY[wave.direction]
    if authority and authority not in Authority.values:
        raise SoaError(f"Unknown authority {authority!r}.")
    mailboxes = mailbox_search(
        user=actor, query=query, authority=authority, recipient_type=recipient_type, ou=ou, drift=drift,
        department=department,
    ).filter(scope_filter(actor, Action.WAVE_BUILD, "dn_norm"))  # fmt: skip
    filters = {"query": query, "ou": ou, "department": department, "recipient_type": recipient_type,
               "drift": drift, "authority": authority}  # fmt: skip
    return list(mailboxes.order_by("pk").values_list("pk", flat=True)), filters


@dataclass(frozen=True)
class FilterPreview:
    """What adding by a filter would do: the mailboxes it matches, and how many of them are members already."""

    matched: int
    already_members: int

    @property
    def new(self) -> int:
        return self.matched - self.already_members


def wave_add_by_filter_preview(*, actor: User, wave_id: int, **filters: Any) -> FilterPreview:
    """What ``wave_add_by_filter`` with these filters would add now (reads only), for the page to ask first."""
    require_action(actor, Action.WAVE_BUILD)
    wave = PilotWave.objects.filter(pk=wave_id).first()
    if wave is None:
        raise SoaError(f"There is no pilot wave #{wave_id}.")
    refuse(members_refusal(actor, wave))
    ids, _ = _filter_matches(actor, wave, **_filter_arguments(filters))
    already = set(wave.members.values_list("mailbox_id", flat=True))
    return FilterPreview(matched=len(ids), already_members=sum(1 for pk in ids if pk in already))


def _filter_arguments(given: dict[str, Any]) -> dict[str, Any]:
    names = ("query", "ou", "department", "recipient_type", "drift", "authority")
    defaults = {"query": "", "ou": "", "department": "", "recipient_type": "", "drift": None, "authority": None}
    return {name: given.get(name, defaults[name]) for name in names}


@transaction.atomic
def wave_add_by_filter(
    *,
    actor: User,
    wave_id: int,
    query: str = "",
    ou: str = "",
    department: str = "",
    recipient_type: str = "",
    drift: bool | None = None,
    authority: str | None = None,
) -> MembershipChange:
    """Add every mailbox in the actor's wave-building scope that matches the filters (the mailbox list's search,
    plus department).

    ``authority`` None means the wave's source authority (an on-prem-mastered mailbox for a wave to the cloud),
    so "add OU=Sales" adds what can still move; "" means any authority.
    """
    wave = _draft_wave(actor, wave_id)
    ids, filters = _filter_matches(
        actor, wave, query=query, ou=ou, department=department, recipient_type=recipient_type, drift=drift,
        authority=authority,
    )  # fmt: skip
    how = {"how": "filter", "filters": {key: value for key, value in filters.items() if value not in ("", None)}}
    return add_members(actor, wave, ids, {**how, "matched": len(ids)})


def wave_add_from_csv(*, actor: User, wave_id: int, text: str | Iterable[str]) -> MembershipChange:
    """Add the mailboxes listed one per line (UPN or any address; optional header; ``#`` comments). ``text`` is the
    list, or its lines as read from an upload (soa.wave_csv.upload_lines, which bounds its bytes).

    Any bad line (unreadable, unknown, ambiguous, outside the actor's scope, or naming the same mailbox as an
    earlier line) refuses the whole list with a CsvImportError naming the first bad lines by number. A list past
    WAVE_CSV_MAX_BYTES or WAVE_CSV_MAX_LINES is refused before it is looked up.

    The list is read and matched before the transaction that adds the members opens: a long list must not hold
    the wave's lock (on SQLite, the database's write lock) while it is parsed and looked up. Inside that
    transaction the wave's state and the actor's scope over the matched mailboxes are checked again.
    """
    require_action(actor, Action.WAVE_BUILD)
    wave = PilotWave.objects.filter(pk=wave_id).first()
    if wave is None:
        raise SoaError(f"There is no pilot wave #{wave_id}.")
    refuse(members_refusal(actor, wave))  # before the work of reading: a refused list costs nothing
    text = text or ""
    if isinstance(text, str) and len(text.encode()) > settings.WAVE_CSV_MAX_BYTES:
        raise SoaError(csv_too_large())
    try:
        entries, problems = read_entries(text, max_lines=settings.WAVE_CSV_MAX_LINES)
    except CsvInputError as exc:
        raise SoaError(str(exc)) from None
    if not entries and not problems:
        raise SoaError("The list is empty: give one UPN or email address per line.")
    matches = match_mailboxes(entries)
    inside = in_build_scope(actor, {pk for ids in matches.values() for pk in ids})
    first_line: dict[int, int] = {}
    for entry in entries:
        ids = matches[(entry.prefix, entry.address)]
        if not ids:
            problems.append(LineProblem(entry.line, entry.raw, "unknown: no mailbox has this UPN or address"))
        elif len(ids) > 1:
            problems.append(LineProblem(entry.line, entry.raw, f"ambiguous: {len(ids)} mailboxes have this address"))
        else:
            (pk,) = ids
            if pk not in inside:
                problems.append(LineProblem(entry.line, entry.raw, "outside your wave-building scope"))
            elif pk in first_line:
                problems.append(
                    LineProblem(entry.line, entry.raw, f"duplicate: the same mailbox as line {first_line[pk]}")
                )
            else:
                first_line[pk] = entry.line
    if problems:
        raise CsvImportError(problems)
    with transaction.atomic():
        wave = _draft_wave(actor, wave_id)
        if in_build_scope(actor, first_line) != set(first_line):
            raise SoaError("Your wave-building scope changed while the list was read; upload it again.", Refusal.ACTOR)
        return add_members(actor, wave, list(first_line), {"how": "csv", "lines": len(entries)})


@transaction.atomic
def wave_remove_members(*, actor: User, wave_id: int, mailbox_ids: Iterable[int]) -> MembershipChange:
    """Take mailboxes out of a draft wave. Ids that are not members, or members outside the actor's scope,
    refuse the whole call."""
    wave = _draft_wave(actor, wave_id)
    wanted = _ids(mailbox_ids, empty="Pick at least one member to remove.")
    members: dict[int, str] = {}
    for chunk in _chunks(wanted):
        members.update(wave.members.filter(mailbox_id__in=chunk).values_list("mailbox_id", "mailbox__upn"))
    strangers = [pk for pk in wanted if pk not in members]
    inside = in_build_scope(actor, members)
    outside = sorted(upn for pk, upn in members.items() if pk not in inside)
    problems = []
    if strangers:
        problems.append(f"not members of this wave: mailbox id {listing(strangers)}")
    if outside:
        problems.append(f"outside your wave-building scope: {listing(outside)}")
    if problems:
        raise SoaError("Nothing was removed: " + "; ".join(problems) + ".", "" if strangers else Refusal.ACTOR)
    before = wave.audit_snapshot()
    for chunk in _chunks(wanted):
        wave.members.filter(mailbox_id__in=chunk).delete()
    wave.selection = [*wave.selection, {"how": "removed", "removed": len(wanted)}]
    wave.version += 1
    wave.save(update_fields=["selection", "version", "updated_at"])
    audit_record(
        actor=actor, action="soa.wave.members_removed", obj=wave, before=before,
        after={**wave.audit_snapshot(), "removed_mailbox_ids": wanted},
    )  # fmt: skip
    return MembershipChange(wave=wave, changed=len(wanted))
