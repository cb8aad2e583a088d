"""The decommission readiness page (soa.readiness, soa.views_readiness): its figures against counts made here
independently, the §7.3 checklist (reference/exchange-facts.md) flipping from not met to met, the daily snapshot,
the CSV export, the printable report and who sees it."""

import csv
import datetime as dt
import io
import random

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, ChangeRoute, ChangeState
from soa.models import ChangeRequest, ConsumerApplication, ReadinessGroup, ReadinessSnapshot, WaveMember
from soa.preflight import SUPPORTED_RECIPIENT_TYPES
from soa.readiness import chart
from tests.soa.test_wave_support import FINANCE, SALES, make_mailbox, submitted_wave
from writeback.jobs.readiness import readiness_snapshot_take
from writeback.models import DriftFinding, WritebackTask

pytestmark = pytest.mark.django_db

PAYROLL = f"OU=Payroll,{FINANCE}"
TYPES = ["UserMailbox", "UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox", "MailUser"]


@pytest.fixture(autouse=True)
def _measure_every_time(settings):
    settings.READINESS_CACHE_SECONDS = 0


@pytest.fixture
def people(make_user):
    return {
        "admin": make_user("adam", Role.ADMIN),
        "op": make_user("olga", Role.WAVE_OPERATOR),
        "approver": make_user("anna", Role.APPROVER),
        "auditor": make_user("audrey", Role.AUDITOR),
        "helpdesk": make_user("hugo", Role.HELPDESK),
        "sales_op": make_user("sally", Role.WAVE_OPERATOR, scopes=(SALES,)),
    }


@pytest.fixture
def seeded(people):
    """A tenant of 90 mailboxes whose columns vary at random (fixed seed), with drift, writebacks and a wave."""
    rng = random.Random(12)
    now = timezone.now()
    mailboxes = []
    for index in range(90):
        mailboxes.append(make_mailbox(
            f"User {index:03d}", rng.choice([SALES, FINANCE, PAYROLL]),
            authority=rng.choice([Authority.ON_PREM, Authority.CLOUD]),
            recipient_type_details=rng.choice(TYPES), is_dir_synced=rng.random() > 0.1,
            in_exo=rng.random() > 0.1, in_ad=rng.random() > 0.05, has_drift=rng.random() > 0.8,
            exo_when_changed=now - dt.timedelta(hours=rng.choice([2, 100])),
        ))  # fmt: skip
    movable = [m for m in mailboxes if m.authority == Authority.ON_PREM and m.recipient_type_details == "UserMailbox"]
    submitted_wave(people["op"], *movable[:3], name="Claimed")
    ChangeRequest.objects.create(
        mailbox=movable[4], requested_by=people["helpdesk"], base_version=1, state=ChangeState.PENDING_APPROVAL,
        route=ChangeRoute.AD_ONLY, idempotency_key="rd-1",
    )  # fmt: skip
    for mailbox in mailboxes[:5]:
        DriftFinding.objects.create(mailbox=mailbox, attribute="CustomAttribute1", ad_value="x", cloud_value="y")
    DriftFinding.objects.create(mailbox=mailboxes[6], attribute="CustomAttribute2", resolved_at=now)
    WritebackTask.objects.create(mailbox=mailboxes[7], state=WritebackTask.State.FAILED, source="manual")
    WritebackTask.objects.create(mailbox=mailboxes[8], state=WritebackTask.State.FAILED, source="manual")
    WritebackTask.objects.create(mailbox=mailboxes[8], state=WritebackTask.State.DONE, source="manual")
    ConsumerApplication.objects.create(name="Phone book", attributes=["msExchHideFromAddressLists", "title"])
    return [type(m).objects.get(pk=m.pk) for m in mailboxes]


def _figures(client, user):
    client.force_login(user)
    response = client.get(reverse("readiness"))
    assert response.status_code == 200
    return response.context["figures"], response


def _expected(mailboxes, claimed_ids, open_change_ids, now):
    """The page's figures counted here from the rows, one mailbox at a time (pre-flight's rules, soa.preflight)."""
    on_prem = [m for m in mailboxes if m.authority == Authority.ON_PREM]
    quiet = now - dt.timedelta(hours=24.5)
    reasons = {
        "NOT_DIR_SYNCED": lambda m: not m.is_dir_synced,
        "UNSUPPORTED_RECIPIENT_TYPE": lambda m: m.recipient_type_details not in SUPPORTED_RECIPIENT_TYPES,
        "MISSING_IN_EXO": lambda m: not m.in_exo,
        "MISSING_IN_AD": lambda m: not m.in_ad,
        "RECENT_ON_PREM_CHANGE": lambda m: m.exo_when_changed > quiet,
        "IN_OTHER_WAVE": lambda m: m.pk in claimed_ids,
        "OPEN_CHANGE_REQUEST": lambda m: m.pk in open_change_ids,
    }
    by_ou: dict[str, list[int]] = {}
    by_type: dict[str, list[int]] = {}
    for m in mailboxes:
        cloud = m.authority == Authority.CLOUD
        for table, key in ((by_ou, m.ou_norm), (by_type, m.recipient_type_details)):
            row = table.setdefault(key, [0, 0])
            row[0 if cloud else 1] += 1
    return {
        "total": len(mailboxes),
        "cloud": len(mailboxes) - len(on_prem),
        "on_prem": len(on_prem),
        "drifted": sum(m.has_drift for m in mailboxes),
        "blockers": {code: sum(1 for m in on_prem if test(m)) for code, test in reasons.items()},
        "ready": sum(1 for m in on_prem if not any(test(m) for test in reasons.values())),
        "synced_not_moved": sum(
            1 for m in on_prem if m.is_dir_synced and m.recipient_type_details in SUPPORTED_RECIPIENT_TYPES
        ),
        "by_ou": by_ou,
        "by_type": by_type,
    }


def test_figures_match_counts_made_independently(client, people, seeded):
    figures, response = _figures(client, people["admin"])
    claimed = set(WaveMember.objects.filter(wave__name="Claimed", excluded=False).values_list("mailbox_id", flat=True))
    open_change = set(ChangeRequest.objects.values_list("mailbox_id", flat=True))
    expected = _expected(seeded, claimed, open_change, timezone.now())
    for name in ("total", "cloud", "on_prem", "drifted", "ready", "synced_not_moved"):
        assert figures[name] == expected[name], name
    assert {row["code"]: row["count"] for row in figures["blockers"]} == expected["blockers"]
    assert all(expected["blockers"].values()) and expected["ready"], "the seed exercises every reason"
    assert {row["ou"]: [row["cloud"], row["on_prem"]] for row in figures["by_ou"]} == expected["by_ou"]
    assert {row["recipient_type"]: [row["cloud"], row["on_prem"]] for row in figures["by_type"]} == expected["by_type"]
    assert figures["open_drift"] == 5  # the resolved finding does not count
    assert figures["failed_writebacks"] == 1  # the second failure was made good by a later writeback
    assert figures["unsupported"] == sum(1 for m in seeded if m.recipient_type_details == "MailUser")
    (unsupported,) = figures["unsupported_types"]
    assert unsupported["recipient_type"] == "MailUser" and "§1.1" in unsupported["advice"]
    # title is an identity attribute, outside the map; msExchHideFromAddressLists is not written back by default
    assert figures["stale_attributes"] == [{"attribute": "msExchHideFromAddressLists", "applications": ["Phone book"]}]
    text = response.content.decode()
    assert "exchange-facts §7.3" in text and "§1.9" in text


def test_drill_down_links_use_the_mailbox_list_filters(client, people, seeded):
    _figures_, response = _figures(client, people["op"])
    text = response.content.decode()
    sales = SALES.lower().replace(",", "%2C").replace("=", "%3D")
    assert f'href="/mailboxes/?ou={sales}&amp;authority=ON_PREM"' in text
    assert 'href="/mailboxes/?authority=CLOUD&amp;recipient_type=SharedMailbox"' in text
    assert "recipient_type=MailUser" not in text  # the list cannot filter by a type it does not move
    listed = client.get(f"/mailboxes/?ou={SALES}&authority=ON_PREM&recipient_type=UserMailbox")
    assert listed.status_code == 200 and listed.context["form"].is_valid()


def test_a_scoped_user_counts_only_their_scope(client, people, seeded):
    figures, _ = _figures(client, people["sales_op"])
    sales = [m for m in seeded if m.ou_norm == SALES.lower()]
    assert figures["total"] == len(sales)
    assert figures["cloud"] == sum(m.authority == Authority.CLOUD for m in sales)
    assert figures["open_drift"] == sum(1 for m in seeded[:5] if m.ou_norm == SALES.lower())
    assert {row["ou"] for row in figures["by_ou"]} == {SALES.lower()}


def _item(client, user, key):
    figures, response = _figures(client, user)
    (entry,) = [entry for entry in response.context["checklist"] if entry["item"].key == key]
    return entry["item"]


def test_checklist_soa_for_every_synced_mailbox(client, people):
    """exchange-facts §7.3, prerequisite 2: every directory-synchronised mailbox has IsExchangeCloudManaged true."""
    ann = make_mailbox("Ann Archer")
    make_mailbox("Bob Baker", authority=Authority.CLOUD)
    make_mailbox("Cid Cole", is_dir_synced=False)  # not synchronised: the condition does not concern it
    item = _item(client, people["admin"], "soa_all_mailboxes")
    assert not item.met and item.measured.startswith("1 directory-synchronised")
    ann.authority = Authority.CLOUD
    ann.save()
    assert _item(client, people["admin"], "soa_all_mailboxes").met


def test_checklist_mailboxes_in_exchange_online(client, people):
    """exchange-facts §7.3, prior state: the mailboxes are in Exchange Online."""
    ann = make_mailbox("Ann Archer", in_exo=False, authority=Authority.CLOUD)
    assert not _item(client, people["admin"], "mailboxes_in_exo").met
    ann.in_exo = True
    ann.save()
    assert _item(client, people["admin"], "mailboxes_in_exo").met


def test_checklist_groups_and_contacts(client, people):
    """exchange-facts §7.3 and §1.1: groups and contacts need object-level SOA, which the portal does not move."""
    group = make_mailbox("All Staff", recipient_type_details="MailUniversalDistributionGroup")
    figures, _ = _figures(client, people["admin"])
    assert figures["unsupported_types"][0]["advice"].startswith("Not covered by IsExchangeCloudManaged: move it with")
    assert not _item(client, people["admin"], "groups_contacts").met
    group.delete()
    assert _item(client, people["admin"], "groups_contacts").met


def test_checklist_writeback_works(client, people):
    """exchange-facts §7.3 step 11 (and §2): writeback still works; a failed writeback is made good by a later one."""
    ann = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    WritebackTask.objects.create(mailbox=ann, state=WritebackTask.State.FAILED, source="manual")
    assert not _item(client, people["admin"], "writeback_works").met
    WritebackTask.objects.create(mailbox=ann, state=WritebackTask.State.DONE, source="manual")
    assert _item(client, people["admin"], "writeback_works").met


@pytest.mark.parametrize("role", ["admin", "op", "approver", "auditor"])
def test_who_sees_the_page(client, people, role):
    client.force_login(people[role])
    for name in ("readiness", "readiness_report", "readiness_export"):
        assert client.get(reverse(name)).status_code == 200, name


def test_help_desk_does_not(client, people):
    client.force_login(people["helpdesk"])
    for name in ("readiness", "readiness_report", "readiness_export"):
        assert client.get(reverse(name)).status_code == 403, name


def test_the_snapshot_feeds_the_trend(client, people, seeded):
    today = timezone.now().date()
    for days in range(1, 15):
        ReadinessSnapshot.objects.create(day=today - dt.timedelta(days=days), total=90, cloud=40 - days, on_prem=50)
    snapshot = readiness_snapshot_take()
    again = readiness_snapshot_take()  # a second tick the same day replaces the first
    assert again.pk == snapshot.pk and ReadinessSnapshot.objects.count() == 15
    figures, response = _figures(client, people["admin"])
    assert snapshot.cloud == figures["cloud"] and snapshot.open_drift == 5 and snapshot.figures["total"] == 90
    text = response.content.decode()
    assert 'data-testid="rd-chart-cloud"' in text and "<polyline" in text
    drawn = response.context["cloud_chart"]
    assert len(drawn.dots) == 15 and drawn.dots[-1][3] == figures["cloud"]


def test_chart_scales_into_its_box():
    snapshots = [ReadinessSnapshot(day=dt.date(2026, 11, d), cloud=v) for d, v in ((1, 0), (2, 50), (3, 100))]
    drawn = chart(snapshots, "cloud", width=600, height=160)
    assert drawn.points == "48.0,136.0 320.0,72.0 592.0,8.0" and drawn.top == 100
    assert chart([], "cloud") is None


def test_csv_export_holds_every_figure_and_is_recorded(client, people, seeded):
    client.force_login(people["auditor"])
    response = client.get(reverse("readiness_export"))
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["section", "item", "cloud", "on_prem", "total", "count", "status", "note"]
    figures, _ = _figures(client, people["auditor"])
    assert ["total", "mailboxes", str(figures["cloud"]), str(figures["on_prem"]), "90", "", "", ""] in rows
    assert len([row for row in rows if row[0] == "ou"]) == 3
    assert {row[1] for row in rows if row[0] == "checklist"} >= {
        "Exchange-attribute SOA transferred for every directory-synchronised mailbox"
    }
    assert AuditEvent.objects.filter(action="soa.readiness.exported", actor=people["auditor"]).count() == 1
    prerequisites = {row[1]: row[6] for row in rows if row[0] == "prerequisite"}
    assert len(prerequisites) == 4 and set(prerequisites.values()) == {"unknown"}  # nothing checked yet


def test_the_printable_report_shows_the_prerequisites_without_their_forms(client, people, seeded):
    from soa.models import PrerequisiteCheck

    PrerequisiteCheck.objects.create(key="connect_sync", status="not_met", measured="Last synced 9 hours ago.")
    client.force_login(people["admin"])
    text = client.get(reverse("readiness_report")).content.decode()
    assert "Prerequisites: 0 of 4 met" in text and "Last synced 9 hours ago." in text
    assert reverse("prerequisite_check") not in text and reverse("prerequisite_version") not in text


def test_printable_report_has_no_drill_down_links(client, people, seeded):
    client.force_login(people["approver"])
    text = client.get(reverse("readiness_report")).content.decode()
    assert "Decommission readiness report" in text and "@media print" not in text  # the styles are in portal.css
    assert "/mailboxes/?" not in text


def test_dashboard_counts_link_to_the_page(client, people, seeded):
    client.force_login(people["op"])
    text = client.get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("readiness")}"' in text
    client.force_login(people["helpdesk"])
    assert reverse("readiness") not in client.get(reverse("dashboard")).content.decode()


def test_the_demo_seeds_five_weeks_of_history_once(client, people, seeded):
    from sandbox.demo_readiness import DAYS, demo_readiness_seed

    assert demo_readiness_seed(say=lambda _line: None) == DAYS
    assert demo_readiness_seed(say=lambda _line: None) == 0  # a restarted demo keeps its history
    assert ReadinessSnapshot.objects.count() == DAYS + 1
    _figures_, response = _figures(client, people["auditor"])
    assert len(response.context["cloud_chart"].dots) == DAYS + 1


def test_every_user_sees_the_recent_snapshot_and_a_fresh_measurement_once_it_is_old(client, people, settings):
    make_mailbox("Ann Archer")
    readiness_snapshot_take()
    make_mailbox("Bob Baker")  # after the snapshot
    figures, _ = _figures(client, people["admin"])
    assert figures["total"] == 1  # the snapshot, pre-aggregated: no scan of the mailboxes
    figures, _ = _figures(client, people["sales_op"])
    assert figures["total"] == 1  # an OU scope: summed from the snapshot's groups of its OUs
    ReadinessSnapshot.objects.update(taken_at=timezone.now() - dt.timedelta(minutes=61))
    figures, _ = _figures(client, people["admin"])
    assert figures["total"] == 2  # too old: measured now
    assert _figures(client, people["sales_op"])[0]["total"] == 2
    settings.READINESS_SNAPSHOT_MAX_AGE_MINUTES = 0
    readiness_snapshot_take()
    make_mailbox("Cid Cole")
    assert _figures(client, people["admin"])[0]["total"] == 3


def test_the_snapshot_command_takes_one_now_or_schedules_the_chain(settings):
    from io import StringIO

    from django.core.management import call_command

    make_mailbox("Ann Archer")
    out = StringIO()
    call_command("readiness_snapshot_schedule", "--now", stdout=out)
    assert "Took the readiness snapshot" in out.getvalue()
    assert ReadinessSnapshot.objects.get().figures["total"] == 1
    settings.READINESS_SNAPSHOT_INTERVAL_MINUTES = 0
    call_command("readiness_snapshot_schedule", stdout=out)
    assert "nothing was scheduled" in out.getvalue()


def _scoped_expected(seeded, scopes, now):
    """_expected over the mailboxes below ``scopes``, with their open drift findings and failed writebacks counted
    here from the rows."""
    bases = [scope.lower() for scope in scopes]
    inside = [m for m in seeded if any(m.dn_norm.endswith("," + base) for base in bases)]
    ids = {m.pk for m in inside}
    claimed = set(WaveMember.objects.filter(wave__name="Claimed", excluded=False).values_list("mailbox_id", flat=True))
    open_change = set(ChangeRequest.objects.values_list("mailbox_id", flat=True))
    expected = _expected(inside, claimed, open_change, now)
    expected["open_drift"] = DriftFinding.objects.filter(resolved_at__isnull=True, mailbox_id__in=ids).count()
    failed = {task.mailbox_id for task in WritebackTask.objects.filter(state=WritebackTask.State.FAILED)}
    made_good = {task.mailbox_id for task in WritebackTask.objects.filter(state=WritebackTask.State.DONE)}
    expected["failed_writebacks"] = len((failed - made_good) & ids)
    return expected


@pytest.mark.parametrize("scopes", [(SALES,), (FINANCE,), (PAYROLL,), (SALES, PAYROLL), (FINANCE, PAYROLL)])
def test_ou_scoped_figures_from_the_snapshot_equal_counts_made_independently(client, make_user, seeded, scopes):
    user = make_user("scoped", Role.WAVE_OPERATOR, scopes=scopes)
    readiness_snapshot_take()
    assert ReadinessGroup.objects.exists()
    make_mailbox("Late Comer", PAYROLL)  # after the snapshot: a figure from the snapshot does not count it
    figures, response = _figures(client, user)
    expected = _scoped_expected(seeded, scopes, timezone.now())
    assert expected["total"] and expected["on_prem"], "the scope holds mailboxes of both authorities"
    for name in (
        "total",
        "cloud",
        "on_prem",
        "drifted",
        "ready",
        "synced_not_moved",
        "open_drift",
        "failed_writebacks",
    ):
        assert figures[name] == expected[name], name
    assert {row["code"]: row["count"] for row in figures["blockers"]} == expected["blockers"]
    assert {row["ou"]: [row["cloud"], row["on_prem"]] for row in figures["by_ou"]} == expected["by_ou"]
    assert {row["recipient_type"]: [row["cloud"], row["on_prem"]] for row in figures["by_type"]} == expected["by_type"]
    taken = ReadinessSnapshot.objects.get()
    assert figures["measured_at"] == taken.figures["measured_at"]  # the page says when its figures were measured
    assert taken.figures["measured_at"][:16] in response.content.decode()
    # The same scope measured live (no recent snapshot) agrees, and counts the late mailbox.
    ReadinessSnapshot.objects.update(taken_at=timezone.now() - dt.timedelta(days=1))
    live, _ = _figures(client, user)
    late = int(any(PAYROLL.lower().endswith(scope.lower()) for scope in scopes))
    assert live["total"] == figures["total"] + late


def test_the_tenant_wide_snapshot_is_the_sum_of_its_groups(people, seeded):
    snapshot = readiness_snapshot_take()
    groups = list(ReadinessGroup.objects.filter(snapshot=snapshot).values_list("counts", flat=True))
    for name, column in (("n", "total"), ("drifted", "drifted"), ("open_drift", "open_drift"),
                         ("failed_writebacks", "failed_writebacks")):  # fmt: skip
        assert sum(group[name] for group in groups) == snapshot.figures[column], name


def test_only_the_newest_snapshot_keeps_its_groups(people, seeded):
    yesterday = readiness_snapshot_take(now=timezone.now() - dt.timedelta(days=1))
    today = readiness_snapshot_take()
    assert yesterday.pk != today.pk and ReadinessSnapshot.objects.get(pk=yesterday.pk).figures
    assert set(ReadinessGroup.objects.values_list("snapshot_id", flat=True)) == {today.pk}
    again = readiness_snapshot_take()  # the day's snapshot replaced, its groups with it
    assert again.pk == today.pk
    assert ReadinessGroup.objects.count() == len({(m.ou_norm, m.recipient_type_details, m.authority) for m in seeded})


def test_without_groups_or_with_a_scope_naming_a_mailbox_the_page_measures_live(client, make_user, people):
    ann = make_mailbox("Ann Archer")
    snapshot = readiness_snapshot_take()
    make_mailbox("Bob Baker")
    one = make_user("one", Role.WAVE_OPERATOR, scopes=(ann.dn,))  # a scope whose base is a mailbox itself
    assert _figures(client, one)[0]["total"] == 1  # live: the per-OU groups cannot tell Ann from Bob
    ReadinessGroup.objects.filter(snapshot=snapshot).delete()  # a snapshot taken before groups were kept
    assert _figures(client, people["sales_op"])[0]["total"] == 2  # live
    assert _figures(client, people["admin"])[0]["total"] == 1  # tenant-wide: the snapshot's own figures
