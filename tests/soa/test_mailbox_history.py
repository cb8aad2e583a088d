"""A mailbox's timeline, its values as of a moment and the comparison of two moments, after real work: a private
directory and Exchange Online emulator, the test database, Redis and a real RQ worker run a wave to the cloud, three
help-desk edits (an address added, made primary, the old primary removed) with their writebacks to AD, and the
rollback wave that copies the cloud's values into AD and flips the mailbox back.
"""

import datetime as dt
import re
import time
import uuid

import django_rq
import pytest
from django.utils import timezone
from rq import SimpleWorker

from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs, views_history
from soa import mailbox_history as history
from soa.choices import Authority, WaveState
from soa.models import Mailbox
from soa.services.approvals import wave_approve
from soa.services.changes import change_request_approve, change_request_create
from soa.services.wave_rollback import wave_rollback_create
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from soa.views_history import _observations
from tests.exchange_fixtures import private_tenant
from tests.soa.test_wave_support import new_wave
from writeback.inventory import inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun

_keys = iter(range(1, 1_000_000))
_USED: set[str] = set()  # the tenant outlives each test's database: each test takes a mailbox no other one moved


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=12, seed=61) as (directory, exchange, _report):
        yield directory, exchange


@pytest.fixture
def stack(tenant, settings):
    settings.WAVE_QUIET_PERIOD_HOURS = 0  # the seed has just written every mailbox
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = False
    for name in (jobs.QUEUE, jobs.WRITEBACK_QUEUE):
        django_rq.get_queue(name).empty()
    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
    assert execute(claim(run.pk)).state == InventoryRun.State.DONE
    return tenant


@pytest.fixture
def people(make_user):
    return {
        "help": make_user("hugo", Role.HELPDESK), "op": make_user("olga", Role.WAVE_OPERATOR),
        "op2": make_user("oscar", Role.WAVE_OPERATOR), "approver": make_user("anna", Role.APPROVER),
        "auditor": make_user("audrey", Role.AUDITOR), "admin": make_user("adam", Role.ADMIN),
    }  # fmt: skip


def work() -> None:
    """The real worker on both queues until they are empty; no job may fail."""
    queues = [django_rq.get_queue(jobs.QUEUE), django_rq.get_queue(jobs.WRITEBACK_QUEUE)]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True)
    for queue in queues:
        assert queue.failed_job_registry.count == 0


def moment() -> dt.datetime:
    """Now, in whole seconds as the pages take it, with the next event at least a second later."""
    time.sleep(1.05)
    now = timezone.now().replace(microsecond=0)
    time.sleep(1.05)
    return now


def unused() -> Mailbox:
    mailbox = (
        Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True)
        .filter(recipient_type_details="UserMailbox")
        .exclude(upn__in=_USED)
        .order_by("upn")
        .first()
    )
    assert mailbox is not None, "the tenant has run out of unused mailboxes"
    _USED.add(mailbox.upn)
    return mailbox


def run_wave(people, wave) -> None:
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=wave.pk)
    work()
    wave.refresh_from_db()
    assert wave.state == WaveState.COMPLETED


def edit(people, mailbox: Mailbox, *operations) -> None:
    mailbox.refresh_from_db()
    request = change_request_create(
        actor=people["help"], mailbox_id=mailbox.pk, operations=list(operations), reason="ticket 5150",
        base_version=mailbox.version, idempotency_key=f"history-{next(_keys)}",
    )  # fmt: skip
    if request.needs_approval:
        change_request_approve(actor=people["approver"], request_id=request.pk)
    work()


def the_story(people) -> tuple[Mailbox, dict[str, dt.datetime], str, str]:
    """Flip to the cloud, add an address, make it primary, remove the old primary, flip back; the moments between."""
    mailbox = unused()
    moments = {"imported": moment()}
    wave = new_wave(people["op"], mailbox, name=f"Timeline {mailbox.pk}", batch_size=4, max_rate=50.0)
    run_wave(people, wave)
    moments["flipped"] = moment()
    mailbox.refresh_from_db()
    old = mailbox.primary_smtp
    alias = f"tl-{uuid.uuid4().hex[:6]}@{old.partition('@')[2]}"
    edit(people, mailbox, {"op": "add_alias", "address": alias})
    moments["added"] = moment()
    edit(people, mailbox, {"op": "make_primary", "address": alias})
    moments["primary"] = moment()
    edit(people, mailbox, {"op": "remove_alias", "address": old})
    moments["removed"] = moment()
    run_wave(people, wave_rollback_create(actor=people["op"], wave_id=wave.pk))
    moments["reverted"] = moment()
    mailbox.refresh_from_db()
    return mailbox, moments, old, alias


def addresses(value) -> set[str]:
    return {address.lower() for address in value or []}


def at(mailbox: Mailbox, when: dt.datetime) -> history.Moment:
    return history.values_at(when, _observations(mailbox))


def row(found: history.Moment, name: str) -> dict:
    return next(item for item in found.rows if item["attribute"].exo == name)


@pytest.mark.django_db(transaction=True)
def test_values_as_of_each_moment_follow_the_edits_the_flip_and_the_revert(stack, people, client):
    mailbox, moments, old, alias = the_story(people)

    before = at(mailbox, moments["imported"])
    assert before.before_history and not before.authority.known
    assert not row(before, "EmailAddresses")["exo"].known
    assert "does not show" in row(before, "EmailAddresses")["ad"].unknown_reason

    flipped = at(mailbox, moments["flipped"])
    assert flipped.authority.value == Authority.CLOUD and "wave" in flipped.authority.source.source
    emails = row(flipped, "EmailAddresses")
    assert f"smtp:{old}" in addresses(emails["exo"].value) and f"smtp:{alias}" not in addresses(emails["exo"].value)
    assert emails["ad"].known and f"smtp:{alias}" not in addresses(emails["ad"].value)
    submitted = AuditEvent.objects.get(pk=emails["exo"].source.event_id)  # the wave's snapshot, by its submission
    assert submitted.action == "soa.wave.submitted" and "snapshot at submission" in emails["exo"].source.source

    added = at(mailbox, moments["added"])
    emails = row(added, "EmailAddresses")
    assert f"smtp:{alias}" in addresses(emails["exo"].value) and f"smtp:{alias}" in addresses(emails["ad"].value)
    assert emails["ad"].source.source.startswith("writeback")  # set by the writeback's LDAP add
    assert row(added, "WindowsEmailAddress")["exo"].value.lower() == old.lower()

    primary = at(mailbox, moments["primary"])
    assert row(primary, "WindowsEmailAddress")["exo"].value.lower() == alias.lower()
    assert f"SMTP:{alias}".lower() in addresses(row(primary, "EmailAddresses")["ad"].value)
    assert [a for a in row(primary, "EmailAddresses")["ad"].value if a.lower() == f"smtp:{alias}"][0].startswith("SMTP")

    removed = at(mailbox, moments["removed"])
    for side in ("exo", "ad"):
        assert f"smtp:{old}" not in addresses(row(removed, "EmailAddresses")[side].value)

    reverted = at(mailbox, moments["reverted"])
    assert reverted.authority.value == Authority.ON_PREM
    assert f"smtp:{alias}" in addresses(row(reverted, "EmailAddresses")["ad"].value)

    # What the history rebuilds for now is what the portal holds now.
    now = at(mailbox, timezone.now())
    assert addresses(row(now, "EmailAddresses")["ad"].value) == addresses(mailbox.ad_values["EmailAddresses"])

    changes = history.compare(at(mailbox, moments["flipped"]), at(mailbox, moments["primary"]))
    changed = {(item["label"], item["side"]) for item in changes}
    assert ("Email addresses", "Exchange Online") in changed and ("Primary email (mail)", "Active Directory") in changed
    assert ("Authority", "") not in changed
    exo_addresses = next(i for i in changes if (i["label"], i["side"]) == ("Email addresses", "Exchange Online"))
    assert f"SMTP:{alias}".lower() in addresses(exo_addresses["added"])
    assert f"SMTP:{old}".lower() in addresses(exo_addresses["removed"])  # the old primary, now secondary
    assert ("Authority", "") in {(i["label"], i["side"]) for i in history.compare(flipped, reverted)}

    # The pages, as the auditor sees them.
    client.force_login(people["auditor"])
    page = client.get(f"/mailboxes/{mailbox.pk}/history/")
    assert page.status_code == 200
    chains = page.context["chains"]
    actions = [event.action for chain in chains for event in reversed(chain.events)]
    assert actions[0] in ("soa.wave.member_done", "soa.wave.completed")  # newest first: the revert
    assert actions[-1] == "writeback.inventory.changed"  # oldest: the import page that created the mailbox
    assert {"soa.wave.submitted", "soa.wave.approved", "soa.wave.started"} <= set(actions)  # who let it flip
    assert "soa.wave.batch_claimed" not in actions  # a batch names many members
    assert mailbox.pk in chains[-1].events[0].after["created"]
    edit_chains = [c for c in chains if c.oldest.action == "soa.change.requested"]
    assert len(edit_chains) == 3
    assert "Remove an address smtp:" in edit_chains[0].summary  # newest first: the removal
    for chain in edit_chains:  # request → Exchange → AD, one correlation id
        steps = [event.action for event in chain.events]
        assert steps.index("soa.change.applied") < steps.index("writeback.task.completed"), steps
    assert b"writeback.task.completed" in page.content and b"event-diff" in page.content

    when = moments["added"].strftime("%Y-%m-%dT%H:%M:%S")
    shown = client.get(f"/mailboxes/{mailbox.pk}/history/as-of/", {"at": when})
    assert shown.status_code == 200 and alias.encode() in shown.content
    source = row(at(mailbox, moments["added"]), "EmailAddresses")["ad"].source.event_id
    assert f"?before={source + 1}#event-{source}".encode() in shown.content  # each value links to its event
    early = client.get(f"/mailboxes/{mailbox.pk}/history/as-of/", {"at": "2020-01-01T00:00"})
    assert b"before-history" in early.content and b"does not show" in early.content
    compared = client.get(
        f"/mailboxes/{mailbox.pk}/history/compare/",
        {"earlier": moments["flipped"].isoformat()[:19], "later": moments["reverted"].isoformat()[:19]},
    )
    assert compared.status_code == 200 and len(compared.context["changes"]) >= 3


@pytest.mark.django_db(transaction=True)
def test_each_role_sees_what_it_may_and_bad_moments_are_refused(stack, people, client, make_user, monkeypatch):
    mailbox = unused()
    run_wave(people, new_wave(people["op"], mailbox, name=f"Roles {mailbox.pk}", batch_size=4, max_rate=50.0))
    mailbox.refresh_from_db()
    domain = mailbox.primary_smtp.partition("@")[2]
    edit(people, mailbox, {"op": "add_alias", "address": f"r-{uuid.uuid4().hex[:6]}@{domain}"})
    url = f"/mailboxes/{mailbox.pk}/history/"

    def actions(user) -> set[str]:
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200
        return {event.action for chain in response.context["chains"] for event in chain.events}

    admin = actions(people["admin"])
    assert "soa.wave.member_done" in admin and "soa.change.applied" in admin
    help_desk = actions(people["help"])  # help desk has no wave_view: edits and writebacks, not the flips
    assert "soa.change.applied" in help_desk and "writeback.task.completed" in help_desk
    assert not any(action.startswith(("soa.wave.", "writeback.inventory.")) for action in help_desk)
    assert "writeback.inventory.changed" in admin
    labels = client.get(url).context
    assert "wave flips and reverts" in labels["hidden"] and "help-desk edits" in labels["shown"]
    assert client.get(f"{url}as-of/").status_code == 403  # values at a moment are for auditors and admins
    assert client.get(f"{url}compare/").status_code == 403

    monkeypatch.setattr(views_history, "PAGE_SIZE", 3)  # pages of three events: the older ones on the next
    first = client.get(url)
    newest = [event.pk for chain in first.context["chains"] for event in chain.events]
    assert first.context["more"] and len(newest) == 3
    older = client.get(url, {"before": first.context["oldest_id"]}, HTTP_HX_REQUEST="true")
    assert b"<html" not in older.content and b'id="timeline"' in older.content  # the timeline partial, for htmx
    shown = [int(pk) for pk in re.findall(r"Event #(\d+)", older.content.decode())]
    assert shown and all(pk < min(newest) for pk in shown)
    monkeypatch.undo()

    outsider = make_user("otto", Role.HELPDESK, scopes=("OU=Elsewhere,DC=corp,DC=example,DC=com",))
    client.force_login(outsider)
    assert client.get(url).status_code == 404  # outside the scope looks like absent

    client.force_login(people["auditor"])
    future = (timezone.now() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    response = client.get(f"{url}as-of/", {"at": future})
    assert response.status_code == 200 and response.context["moment"] is None
    assert "in the future" in str(response.context["form"].errors["at"])
    response = client.get(f"{url}as-of/", {"at": "31/02/2026 25:00"})
    assert response.context["moment"] is None and "Enter a date and time" in str(response.context["form"].errors)
    response = client.get(f"{url}compare/", {"earlier": "2026-01-02T00:00", "later": "2026-01-01T00:00"})
    assert response.context["changes"] is None and "must be earlier" in str(response.context["form"].errors)
    before = AuditEvent.objects.count()
    client.get(f"{url}as-of/", {"at": "2026-01-01T00:00"})
    assert AuditEvent.objects.count() == before  # reading the history writes none


def test_chains_group_events_of_one_correlation_at_the_newest_one():
    now = timezone.now()
    events = [
        history.Event(5, now, "writeback.task.completed", "writeback.writebacktask", "1", correlation_id="a"),
        history.Event(4, now, "soa.wave.member_done", "soa.wavemember", "1", correlation_id="w"),
        history.Event(3, now, "soa.change.applied", "soa.changerequest", "1", correlation_id="a"),
        history.Event(2, now, "soa.change.approved", "soa.changerequest", "1"),
        history.Event(1, now, "soa.change.requested", "soa.changerequest", "1", correlation_id="a"),
    ]
    found = history.chains(events)
    assert [[e.id for e in chain.events] for chain in found] == [[1, 3, 5], [4], [2]]


def test_an_ldap_delta_without_a_known_value_stays_unknown():
    start = timezone.now()
    add = history.Observation(start, history.AD, "EmailAddresses", {"delta": [("MODIFY_ADD", ["smtp:b@x.com"])]},
                              "writeback #1", 7, False)  # fmt: skip
    alone = history.values_at(start, [add])
    assert not row(alone, "EmailAddresses")["ad"].known
    assert "only what was added or removed" in row(alone, "EmailAddresses")["ad"].unknown_reason
    base = history.Observation(start - dt.timedelta(seconds=1), history.AD, "EmailAddresses", ["SMTP:a@x.com"], "s")
    merged = history.values_at(start, [base, add])
    assert row(merged, "EmailAddresses")["ad"].value == ["SMTP:a@x.com", "smtp:b@x.com"]
    assert row(merged, "EmailAddresses")["ad"].source.event_id == 7


def _event(action, object_type, after, seconds=0, event_id=1, before=None):
    when = timezone.now() - dt.timedelta(minutes=10) + dt.timedelta(seconds=seconds)
    return history.Event(event_id, when, action, object_type, "9", before=before, after=after)


def test_what_each_kind_of_event_shows_of_the_values():
    read_back = {"extensionAttribute3": ["desk 12"], "proxyAddresses": ["SMTP:a@x.com", "smtp:b@x.com"]}
    results = {"directory": {"read_back": read_back}}
    directory_edit = _event("soa.change.applied", "soa.changerequest", {"route": "AD_ONLY", "results": results})
    found = {(o.side, o.attribute): o.value for o in history.observations(directory_edit, mailbox_id=9,
                                                                           wave_directions={})}  # fmt: skip
    assert found == {("ad", "CustomAttribute3"): "desk 12", ("ad", "EmailAddresses"): ["SMTP:a@x.com", "smtp:b@x.com"]}

    finding = {"mailbox_id": 9, "attribute": "CustomAttribute1", "ad_value": "edited in AD", "cloud_value": "staff"}
    scan = _event("writeback.drift.found", "writeback.driftscan",
                  {"findings": [finding, {**finding, "mailbox_id": 10, "ad_value": "other"}]})  # fmt: skip
    found = [(o.side, o.value) for o in history.observations(scan, mailbox_id=9, wave_directions={})]
    assert found == [("ad", "edited in AD"), ("exo", "staff")]  # the other mailbox's finding is not this one's
    repaired = _event("writeback.drift.resolved", "writeback.driftfinding",
                      {**finding, "resolution": "OVERWRITTEN"}, seconds=5, event_id=2)  # fmt: skip
    found = [(o.side, o.value) for o in history.observations(repaired, mailbox_id=9, wave_directions={})]
    assert found == [("ad", "staff")]

    flip = _event("soa.wave.member_done", "soa.wavemember", {"wave": 4, "state": "DONE"}, seconds=9, event_id=3)
    (authority,) = history.observations(flip, mailbox_id=9, wave_directions={4: "TO_CLOUD"})
    assert authority.value == Authority.CLOUD and authority.side == history.AUTHORITY
    imported = _event("writeback.inventory.changed", "writeback.inventoryrun",
                      {"side": "exo", "created": [], "changed": {"9": {"authority": ["CLOUD", "ON_PREM"]}}},
                      seconds=12, event_id=4)  # fmt: skip
    (seen,) = history.observations(imported, mailbox_id=9, wave_directions={})
    assert seen.value == Authority.ON_PREM

    events = [scan, repaired, flip, imported]
    found = [o for e in events for o in history.observations(e, mailbox_id=9, wave_directions={4: "TO_CLOUD"})]
    after_repair = history.values_at(repaired.occurred_at, found)
    assert row(after_repair, "CustomAttribute1")["ad"].value == "staff"
    assert row(after_repair, "CustomAttribute1")["ad"].source.event_id == 2
    assert not after_repair.authority.known  # nothing showed the authority before the flip
    assert history.values_at(timezone.now(), found).authority.value == Authority.ON_PREM


def test_refusals_belong_to_the_auditors_family_not_to_the_edits():
    assert history.family("soa.change.denied") == ("other", "audit_view")
    assert history.family("writeback.drift.denied") == ("other", "audit_view")
    assert history.family("soa.change.applied") == ("edit", "mailbox_view")
    assert history.family("soa.wave.member_done") == ("wave", "wave_view")
    assert history.family("portal.something") == history.DEFAULT_FAMILY
