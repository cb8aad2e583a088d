"""The audit list reads like a story: each event names the mailbox it touched (directly, or through its edit,
writeback task, drift finding or wave membership), a search by any of a mailbox's addresses finds its events,
before/after shows the keys that changed, and the log's own exports can be hidden."""

import pytest
from django.db import transaction

from portal.audit import audit_record
from portal.roles import Role
from portal.views.audit_objects import changed_keys
from soa.choices import ChangeRoute, ChangeState
from soa.models import ChangeRequest
from tests.soa.test_mailbox_pages import SALES, _mailbox
from writeback.models import WritebackTask

pytestmark = pytest.mark.django_db


@pytest.fixture
def story(make_user):
    ann = _mailbox("Ann Archer", SALES, addresses=["team-a@corp.example.com"])
    bob = _mailbox("Bob Baker", SALES)
    helper = make_user("hugo", Role.HELPDESK)
    change = ChangeRequest.objects.create(
        mailbox=ann, requested_by=helper, operations=[], desired={"CustomAttribute1": "x"}, base_version=1,
        state=ChangeState.APPLIED, route=ChangeRoute.EXO_THEN_AD, idempotency_key="story-1",
    )  # fmt: skip
    task = WritebackTask.objects.create(mailbox=ann, desired={"CustomAttribute1": "x"}, source="change")
    with transaction.atomic():
        events = {
            "edit": audit_record(
                actor=helper,
                action="soa.change.applied",
                obj=change,
                before={"CustomAttribute1": "old", "Same": 1},
                after={"CustomAttribute1": "x", "Same": 1, "EmailAddresses": ["smtp:a@b"]},
            ),  # fmt: skip
            "task_event": audit_record(actor=None, action="writeback.task.completed", obj=task),
            "bob_event": audit_record(actor=helper, action="soa.mailbox.viewed", obj=bob),
            "export": audit_record(actor=helper, action="portal.audit.exported", object_type="audit"),
        }
    return {"ann": ann, "bob": bob, "change": change, "task": task, **events}


def _signed_in(client, make_user):
    client.force_login(make_user("audrey", Role.AUDITOR))
    return client


def test_each_event_names_the_mailbox_behind_its_object(client, make_user, story):
    response = _signed_in(client, make_user).get("/audit/")
    named = {event.pk: event.mailbox for event in response.context["page"].object_list}
    assert named[story["edit"].pk] == story["ann"] and named[story["task_event"].pk] == story["ann"]
    assert named[story["bob_event"].pk] == story["bob"] and named[story["export"].pk] is None
    html = response.content.decode()
    assert "Ann Archer" in html and "ann.archer@corp.example.com" in html


def test_a_search_by_any_address_finds_the_mailboxs_events_through_its_objects(client, make_user, story):
    client = _signed_in(client, make_user)
    listed = {e.pk for e in client.get("/audit/", {"mailbox": "TEAM-A@"}).context["page"].object_list}
    assert listed == {story["edit"].pk, story["task_event"].pk}
    listed = {e.pk for e in client.get("/audit/", {"mailbox": "baker"}).context["page"].object_list}
    assert listed == {story["bob_event"].pk}


def test_a_mailbox_search_that_finds_none_says_so_instead_of_listing_everything(client, make_user, story):
    response = _signed_in(client, make_user).get("/audit/", {"mailbox": "nobody-here@"})
    assert list(response.context["page"].object_list) == []
    assert "No mailbox has this name" in response.content.decode()


def test_the_export_follows_the_mailbox_filter(client, make_user, story):
    response = _signed_in(client, make_user).get("/audit/export.jsonl", {"mailbox": "bob.baker@"})
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 1 and f'"id": {story["bob_event"].pk}' in lines[0]


def test_the_logs_own_exports_can_be_hidden(client, make_user, story):
    client = _signed_in(client, make_user)
    shown = {e.action for e in client.get("/audit/").context["page"].object_list}
    hidden = {e.action for e in client.get("/audit/", {"hide_audit": "on"}).context["page"].object_list}
    assert "portal.audit.exported" in shown and "portal.audit.exported" not in hidden
    assert "soa.change.applied" in hidden


def test_before_and_after_show_only_the_keys_that_changed(client, make_user, story):
    assert changed_keys({"CustomAttribute1": "old", "Same": 1}, {"CustomAttribute1": "x", "Same": 1, "New": [1]}) == [
        {"key": "CustomAttribute1", "before": "old", "after": "x", "added": False, "removed": False},
        {"key": "New", "before": None, "after": "[1]", "added": True, "removed": False},
    ]
    assert changed_keys({"Gone": False}, {}) == [
        {"key": "Gone", "before": "false", "after": None, "added": False, "removed": True}
    ]
    assert changed_keys(None, {"a": 1}) == [{"key": "a", "before": None, "after": "1", "added": True, "removed": False}]
    assert changed_keys(["a"], {"a": 1}) == [] and changed_keys(None, None) == []
    html = _signed_in(client, make_user).get("/audit/").content.decode()
    assert (
        "<del>old</del>" in html
        and "<ins>x</ins>" in html
        and "Same" not in html.split('data-testid="event-diff"')[1][:400]
    )
