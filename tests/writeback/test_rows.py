"""update_rows writes each row's own values of the named fields, and nothing else, whatever the values hold: JSON
with quotes and nesting, NULLs, dates, booleans. On PostgreSQL (CI) it is one UPDATE ... FROM (VALUES ...) whose
casts must give every column its type even when the first row holds NULL; on SQLite it is one UPDATE a row."""

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


def test_no_rows_is_no_statement(django_assert_num_queries):
    with django_assert_num_queries(0):
        update_rows([], ["version"])
