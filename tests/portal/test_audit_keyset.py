"""The audit list at scale: keyset pages (newer/older cursors in the URL, no page numbers, no full COUNT), filters
that live in the URL, a filter by wave (the wave's own events and its members'), and exports that follow the same
filters as the page."""

import json
import re

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from portal.audit import audit_record, audit_record_many
from portal.cursors import encode_cursor
from portal.models import AuditEvent
from portal.roles import Role
from portal.views.audit import COUNT_CAP, PAGE_SIZE
from soa.models import WaveMember
from tests.soa.test_wave_support import make_mailbox, new_wave

pytestmark = pytest.mark.django_db


def _auditor(client, make_user):
    client.force_login(make_user("audra", Role.AUDITOR))
    return client


def _many(count: int, action: str = "test.bulk") -> None:
    with transaction.atomic():
        audit_record_many(
            [{"actor": None, "action": action, "object_type": "test", "object_id": str(i)} for i in range(count)]
        )


def _ids(response) -> list[int]:
    return [event.pk for event in response.context["page"].rows]


def _link(response, testid: str) -> str | None:
    found = re.search(rf'href="([^"]+)"[^>]*data-testid="{testid}"', response.content.decode())
    return found.group(1).replace("&amp;", "&") if found else None


def test_walking_older_then_newer_visits_every_event_once_in_order(client, make_user):
    _many(2 * PAGE_SIZE + 7)
    client = _auditor(client, make_user)
    everything = list(AuditEvent.objects.order_by("-occurred_at", "-id").values_list("id", flat=True))
    seen, pages, url = [], [], "/audit/"
    while url:
        response = client.get(url if url.startswith("/") else f"/audit/{url}")
        assert response.status_code == 200
        pages.append(_ids(response))
        seen += pages[-1]
        url = _link(response, "audit-older")
    assert seen == everything and len(pages) == 3 and len(pages[-1]) == len(everything) - 2 * PAGE_SIZE
    # Back from the last page: "newer" gives exactly the page before it, and the first page has no newer link.
    response = client.get(f"/audit/{_link(response, 'audit-newer')}")
    assert _ids(response) == pages[1]
    first = client.get(f"/audit/{_link(response, 'audit-newer')}")
    assert _ids(first) == pages[0] and _link(first, "audit-newer") is None


def test_a_page_link_keeps_the_filters_so_a_filtered_walk_is_bookmarkable(client, make_user):
    _many(PAGE_SIZE + 3, action="test.kept")
    _many(PAGE_SIZE, action="test.other")
    client = _auditor(client, make_user)
    response = client.get("/audit/", {"action": "test.kept"})
    older = _link(response, "audit-older")
    assert "action=test.kept" in older and "after=" in older and "page=" not in older
    second = client.get(f"/audit/{older}")
    assert len(_ids(second)) == 3
    assert set(AuditEvent.objects.filter(pk__in=_ids(second)).values_list("action", flat=True)) == {"test.kept"}


def test_the_count_is_capped_and_no_query_counts_the_whole_table(client, make_user, settings):
    _many(30)
    client = _auditor(client, make_user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/audit/")
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper() and "auditevent" in q["sql"]]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts
    assert response.context["count"] >= 30 and not response.context["more"]
    assert f"{COUNT_CAP + 1}" in counts[0]


@pytest.mark.parametrize("cursor", ["garbage", encode_cursor("2026-01-01T00:00:00", 5), encode_cursor(1, 2), "e30="])
def test_a_cursor_the_page_did_not_write_answers_400_with_why(client, make_user, cursor):
    response = _auditor(client, make_user).get("/audit/", {"after": cursor})
    assert response.status_code == 400 and b"page link is not valid" in response.content


def test_the_wave_filter_shows_the_wave_and_its_members_events_only(client, make_user):
    builder = make_user("wendy", Role.WAVE_OPERATOR)
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    wave = new_wave(builder, ann, bob)
    other = new_wave(builder, make_mailbox("Cy Cole"), name="Other wave")
    member = WaveMember.objects.get(wave=wave, mailbox=ann)
    elsewhere = WaveMember.objects.get(wave=other)
    with transaction.atomic():
        flipped = audit_record(actor=None, action="soa.wave.member_done", obj=member)
        not_this = audit_record(actor=None, action="soa.wave.member_done", obj=elsewhere)
        mailbox_only = audit_record(actor=None, action="soa.mailbox.viewed", obj=ann)
    response = _auditor(client, make_user).get("/audit/", {"wave": wave.pk})
    shown = set(_ids(response))
    own = set(
        AuditEvent.objects.filter(object_type="soa.pilotwave", object_id=str(wave.pk)).values_list("id", flat=True)
    )
    assert own and own <= shown and flipped.pk in shown
    assert not_this.pk not in shown and mailbox_only.pk not in shown
    # With a mailbox too: that mailbox's events within the wave.
    both = set(_ids(client.get("/audit/", {"wave": wave.pk, "mailbox": "bob.baker"})))
    assert flipped.pk not in both and not (both & {not_this.pk, mailbox_only.pk})


def test_the_export_follows_the_page_filters_and_streams_every_match(client, make_user):
    _many(PAGE_SIZE + 5, action="test.export")
    _many(5, action="test.skip")
    client.force_login(make_user("aude", Role.AUDITOR))
    response = client.get("/audit/export.jsonl", {"action": "test.export"})
    assert response.streaming
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert len(rows) == PAGE_SIZE + 5 and {row["action"] for row in rows} == {"test.export"}
    wave_export = client.get("/audit/export.csv", {"wave": 999999})
    assert wave_export.status_code == 200 and len(b"".join(wave_export.streaming_content).splitlines()) == 1


def test_the_time_order_index_exists(db):
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, AuditEvent._meta.db_table)
    assert any(spec["columns"] == ["occurred_at", "id"] and spec["index"] for spec in indexes.values())


def test_the_actor_filter_finds_people_by_name_and_the_system_by_its_recorded_name(client, make_user):
    alice = make_user("alice")
    alice.first_name, alice.last_name = "Alice", "Smith"
    alice.save()
    with transaction.atomic():
        hers = audit_record(actor=alice, action="test.hers")
        system = audit_record(actor=None, action="test.system")
    client = _auditor(client, make_user)
    for typed in ("alic", "SMITH", "alice (Alice Smith)"):
        shown = set(_ids(client.get("/audit/", {"actor": typed})))
        assert hers.pk in shown and system.pk not in shown, typed
    shown = set(_ids(client.get("/audit/", {"actor": "syst"})))
    assert system.pk in shown and hers.pk not in shown
    assert _ids(client.get("/audit/", {"actor": "nobody at all"})) == []


def test_the_mailbox_filter_finds_the_wave_events_that_name_it_only_in_their_values(client, make_user):
    from soa.services.wave_members import wave_remove_members

    builder = make_user("wilma", Role.WAVE_OPERATOR)
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    wave = new_wave(builder, ann, bob)
    wave_remove_members(actor=builder, wave_id=wave.pk, mailbox_ids=[ann.pk])
    added = AuditEvent.objects.get(action="soa.wave.members_added")
    removed = AuditEvent.objects.get(action="soa.wave.members_removed")
    client = _auditor(client, make_user)
    shown = set(_ids(client.get("/audit/", {"mailbox": "ann.archer@"})))
    assert {added.pk, removed.pk} <= shown
    # Bob was added in the same event and never removed.
    bobs = set(_ids(client.get("/audit/", {"mailbox": "bob.baker@"})))
    assert added.pk in bobs and removed.pk not in bobs
