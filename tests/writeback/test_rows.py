"""update_rows writes each row's own values of the named fields, and nothing else, whatever the values hold: JSON
with quotes and nesting, NULLs, dates, booleans. On PostgreSQL (CI) it is one UPDATE ... FROM jsonb_to_recordset(...),
or FROM (VALUES ...) when a value cannot travel as JSON, whose types must give every column its type even when the
first row holds NULL; on SQLite it is one UPDATE a row."""

import datetime as dt

import pytest
from django.utils import timezone

from soa.models import Mailbox
from tests.soa.test_wave_support import make_mailbox
from writeback import rows
from writeback.rows import update_rows

pytestmark = pytest.mark.django_db


def test_each_row_gets_its_own_values_of_the_named_fields_only():
    first, second, third = (make_mailbox(name) for name in ("Row One", "Row Two", "Row Three"))
    when = timezone.now() - dt.timedelta(hours=2)
    first.ad_values = {"CustomAttribute1": 'it\'s "quoted" \\ and ünïcode', "EmailAddresses": ["SMTP:a@b.example"]}
    first.ad_read_at, first.has_drift, first.display_name = None, True, "not written"
    second.ad_values = {"nested": {"list": [1, None, {"deep": True}]}}
    second.ad_read_at, second.has_drift = when, False
    third.ad_values = {}
    third.ad_read_at, third.has_drift = when, True

    update_rows([first, second, third], ["ad_values", "ad_read_at", "has_drift"])

    stored = Mailbox.objects.in_bulk([first.pk, second.pk, third.pk])
    assert stored[first.pk].ad_values == first.ad_values
    assert stored[first.pk].ad_read_at is None and stored[first.pk].has_drift is True
    assert stored[first.pk].display_name == "Row One"  # a field not named is left as stored
    assert stored[second.pk].ad_values == {"nested": {"list": [1, None, {"deep": True}]}}
    assert stored[second.pk].ad_read_at == when and stored[second.pk].has_drift is False
    assert stored[third.pk].ad_values == {} and stored[third.pk].ad_read_at == when


def test_rows_beyond_one_statement_are_all_written(monkeypatch):
    monkeypatch.setattr(rows, "ROWS_PER_STATEMENT", 2)
    mailboxes = [make_mailbox(f"Chunk {index}") for index in range(5)]
    for index, mailbox in enumerate(mailboxes):
        mailbox.version = 100 + index

    update_rows(mailboxes, ["version"])

    assert sorted(Mailbox.objects.values_list("version", flat=True)) == [100, 101, 102, 103, 104]


def test_a_field_named_twice_is_refused_on_every_database():
    mailbox = make_mailbox("Twice")
    with pytest.raises(ValueError, match="named twice"):
        update_rows([mailbox], ["version", "primary_smtp", "version"])


def test_no_rows_is_no_statement(django_assert_num_queries):
    with django_assert_num_queries(0):
        update_rows([], ["version"])


@pytest.mark.parametrize("path", ["json", "values"])
def test_both_postgresql_statements_store_what_save_would(path, monkeypatch, django_assert_num_queries):
    """The JSON document and the VALUES statement (taken when a value cannot travel as JSON) store the same: None in
    a nullable JSON field as SQL NULL (as Model.save() does), JSON null nested inside as JSON null, times exact."""
    from django.db import connection

    from writeback.models import DriftFinding

    if connection.vendor != "postgresql":
        pytest.skip("the two statements are PostgreSQL's (CI runs it)")
    if path == "values":
        monkeypatch.setattr(rows, "_as_json", lambda *args: (_ for _ in ()).throw(rows._NotJson("forced")))
    mailbox = make_mailbox("Drift Rows")
    findings = [
        DriftFinding.objects.create(mailbox=mailbox, attribute=f"CustomAttribute{n}", ad_value="x", cloud_value="y")
        for n in (1, 2)
    ]
    when = timezone.now().replace(microsecond=123456) - dt.timedelta(days=3)
    findings[0].ad_value, findings[0].cloud_value, findings[0].resolved_at = None, [None, "a'b"], when
    findings[1].ad_value, findings[1].cloud_value, findings[1].resolved_at = {"k": "ü"}, None, None

    with django_assert_num_queries(1) as captured:
        update_rows(findings, ["ad_value", "cloud_value", "resolved_at"])

    assert ("jsonb_to_recordset" in captured.captured_queries[0]["sql"]) is (path == "json")
    assert set(DriftFinding.objects.filter(ad_value__isnull=True).values_list("pk", flat=True)) == {findings[0].pk}
    assert set(DriftFinding.objects.filter(cloud_value__isnull=True).values_list("pk", flat=True)) == {findings[1].pk}
    stored = DriftFinding.objects.in_bulk([finding.pk for finding in findings])
    assert stored[findings[0].pk].cloud_value == [None, "a'b"] and stored[findings[0].pk].resolved_at == when
    assert stored[findings[1].pk].ad_value == {"k": "ü"} and stored[findings[1].pk].resolved_at is None


def test_a_json_field_holding_what_json_cannot_fails_as_save_would():
    mailbox = make_mailbox("Not JSON")
    mailbox.ad_values = {"when": dt.datetime(2026, 1, 1)}
    with pytest.raises(TypeError):
        update_rows([mailbox], ["ad_values"])


def _stored(model, pks, fields):
    return list(model.objects.filter(pk__in=pks).order_by("pk").values_list(*fields))


def test_insert_rows_stores_what_bulk_create_stores_and_sets_each_key():
    """insert_rows (COPY on PostgreSQL, multi-row INSERT ... RETURNING on SQLite) against Django's bulk_create on
    twin rows: UUIDs, aware datetimes, nested JSON with quotes and JSON null, None, text with tabs and newlines
    (COPY's own separators), booleans; and every row's key is its own."""
    import uuid

    when = timezone.now().replace(microsecond=654321) - dt.timedelta(days=2)

    def twins():
        return [
            Mailbox(
                upn=f"row{n}@corp.example.com",
                display_name=f"Tab\there\nnewline \\ back {n}",
                search_name=f"s{n}",
                exo_object_id=uuid.uuid4() if n % 2 else None,
                ad_guid=uuid.uuid4(),
                in_ad=bool(n % 2),
                ad_values={"CustomAttribute1": 'it\'s "q"', "nested": [None, {"n": n}]},
                exo_values={},
                drift=["CustomAttribute1"] if n else [],
                ad_when_created=when if n % 3 else None,
                version=n + 1,
            )  # fmt: skip
            for n in range(7)
        ]

    fast, slow = twins(), twins()
    for mine, theirs in zip(fast, slow, strict=True):  # the same identifiers would collide: give the twins others
        theirs.upn, theirs.ad_guid = "x" + mine.upn, uuid.uuid4()
        theirs.exo_object_id = uuid.uuid4() if mine.exo_object_id else None
    rows.insert_rows(fast)
    Mailbox.objects.bulk_create(slow)
    assert all(m.pk for m in fast) and len({m.pk for m in fast}) == len(fast)
    fields = ["display_name", "in_ad", "ad_values", "exo_values", "drift", "ad_when_created", "version", "authority"]
    assert _stored(Mailbox, [m.pk for m in fast], fields) == _stored(Mailbox, [m.pk for m in slow], fields)
    for mailbox in fast:
        stored = Mailbox.objects.get(pk=mailbox.pk)
        assert (stored.upn, stored.ad_guid, stored.exo_object_id) == (
            mailbox.upn,
            mailbox.ad_guid,
            mailbox.exo_object_id,
        )
        assert stored.created_at == stored.updated_at is not None


def test_insert_values_writes_rows_nothing_refers_to_yet():
    from soa.models import MailboxAddress

    mailbox = make_mailbox("Values Row")
    rows.insert_values(
        MailboxAddress,
        ["mailbox", "prefix", "address", "is_primary"],
        [(mailbox.pk, "smtp", "a@corp.example.com", True), (mailbox.pk, "x500", "/o=tab\there", False)],
    )
    stored = set(mailbox.addresses.values_list("prefix", "address", "is_primary"))
    assert {("smtp", "a@corp.example.com", True), ("x500", "/o=tab\there", False)} <= stored
