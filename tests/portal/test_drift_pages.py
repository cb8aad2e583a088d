"""The drift page (who sees it and what, filters and keyset pagination in the URL, one-click and bulk repair through
the services, a crafted POST outside the help desk's OU refused and audited) and the mailbox page's writeback card
(a failed task's error and its Retry behind a confirmation)."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from portal.dn import normalize_dn
from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority
from soa.models import Mailbox
from writeback.models import DriftFinding, DriftScan, WritebackTask

CORP = "OU=Corp,DC=corp,DC=example,DC=com"
SALES = f"OU=Sales,{CORP}"
FINANCE = f"OU=Finance,{CORP}"


def _mailbox(name: str, ou: str) -> Mailbox:
    dn = f"CN={name},{ou}"
    alias = name.lower().replace(" ", ".")
    return Mailbox.objects.create(
        dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(ou), upn=f"{alias}@corp.example.com",
        display_name=name, search_name=name.lower(), primary_smtp=f"{alias}@corp.example.com",
        authority=Authority.CLOUD, in_ad=True, in_exo=True, ad_guid=uuid.uuid4(), exo_object_id=uuid.uuid4(),
        exo_values={"CustomAttribute1": "cloud"}, ad_values={"CustomAttribute1": "ad"},
    )  # fmt: skip


def _finding(mailbox: Mailbox, attribute: str = "CustomAttribute1", *, days_ago: float = 0) -> DriftFinding:
    return DriftFinding.objects.create(
        mailbox=mailbox, attribute=attribute, ad_value="ad", cloud_value="cloud",
        found_at=timezone.now() - dt.timedelta(days=days_ago),
    )  # fmt: skip


@pytest.fixture
def tenant(db):
    DriftScan.objects.create(mode=DriftScan.Mode.FULL, state=DriftScan.State.DONE, finished_at=timezone.now())
    sales, finance = _mailbox("Sam Sales", SALES), _mailbox("Fay Finance", FINANCE)
    return {
        "sales": sales,
        "finance": finance,
        "sales_finding": _finding(sales),
        "old_finding": _finding(sales, "CustomAttribute2", days_ago=10),
        "finance_finding": _finding(finance),
    }


def _login(client, make_user, name, role, scopes=()):
    user = make_user(name, role, scopes=scopes)
    client.force_login(user)
    return user


def _shown(response) -> set[int]:
    return {f.pk for f in (row["finding"] for row in response.context["rows"])}


@pytest.mark.django_db
def test_who_sees_the_drift_page_and_which_findings(client, make_user, tenant):
    _login(client, make_user, "sally", Role.HELPDESK, scopes=(SALES,))
    response = client.get("/drift/")
    assert response.status_code == 200
    assert _shown(response) == {tenant["sales_finding"].pk, tenant["old_finding"].pk}
    assert b'href="/drift/"' in response.content  # in the navigation
    assert b"Scan now" not in response.content

    _login(client, make_user, "audrey", Role.AUDITOR)
    response = client.get("/drift/")
    assert len(_shown(response)) == 3
    assert b"Repair" not in response.content.replace(b'visually-hidden">Repair', b"")  # read only

    _login(client, make_user, "otto", Role.WAVE_OPERATOR)
    assert client.get("/drift/").status_code == 403
    assert b'href="/drift/"' not in client.get("/").content


@pytest.mark.django_db
def test_filters_by_ou_attribute_and_age_in_the_url(client, make_user, tenant):
    _login(client, make_user, "adam", Role.ADMIN)
    assert _shown(client.get("/drift/", {"ou": SALES.lower()})) == {
        tenant["sales_finding"].pk,
        tenant["old_finding"].pk,
    }
    assert _shown(client.get("/drift/", {"ou": CORP})) == {f.pk for f in DriftFinding.objects.all()}
    assert _shown(client.get("/drift/", {"attribute": "CustomAttribute2"})) == {tenant["old_finding"].pk}
    assert _shown(client.get("/drift/", {"age": "7"})) == {tenant["old_finding"].pk}
    response = client.get("/drift/", {"ou": "not a dn"})
    assert _shown(response) == set() and b"No open finding matches these filters" in response.content
    partial = client.get("/drift/", {"attribute": "CustomAttribute2"}, HTTP_HX_REQUEST="true")
    assert partial.content.lstrip().startswith(b'<div id="drift-findings"')


@pytest.mark.django_db
def test_keyset_pagination_walks_every_finding_once(client, make_user, tenant):
    mailbox = tenant["sales"]
    for index in range(3, 15):
        _finding(mailbox, f"CustomAttribute{index}", days_ago=index / 100)
    for _ in range(60):  # many found at the same instant: the id breaks the tie
        DriftFinding.objects.create(
            mailbox=tenant["finance"], attribute="ExtensionCustomAttribute1", found_at=tenant["sales_finding"].found_at
        )
    _login(client, make_user, "adam", Role.ADMIN)
    seen, after, pages = [], "", 0
    while True:
        response = client.get("/drift/", {"after": after} if after else {})
        seen += [row["finding"].pk for row in response.context["rows"]]
        pages += 1
        after = response.context["next_cursor"]
        if not after:
            break
    assert pages == 2 and len(seen) == len(set(seen)) == DriftFinding.objects.count()


@pytest.mark.django_db(transaction=True)
def test_one_click_repair_queues_a_drift_repair_writeback(client, make_user, tenant):
    helpdesk = _login(client, make_user, "sally", Role.HELPDESK, scopes=(SALES,))
    finding = tenant["sales_finding"]
    response = client.post(f"/drift/{finding.pk}/repair/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b"Repair queued" in response.content
    finding.refresh_from_db()
    task = finding.repair_task
    assert (
        task.source == "drift_repair"
        and task.requested_by == helpdesk
        and task.desired == {"CustomAttribute1": "cloud"}
    )
    assert AuditEvent.objects.filter(action="writeback.drift.repair_requested", object_id=str(finding.pk)).exists()
    assert b"Repair queued" in client.get("/drift/").content  # the row says its repair is on its way


@pytest.mark.django_db(transaction=True)
def test_a_crafted_repair_outside_the_help_desks_ou_is_refused_audited_and_answered_404(client, make_user, tenant):
    helpdesk = _login(client, make_user, "sally", Role.HELPDESK, scopes=(SALES,))
    finding = tenant["finance_finding"]
    assert client.post(f"/drift/{finding.pk}/repair/").status_code == 404
    finding.refresh_from_db()
    assert finding.repair_task is None and not WritebackTask.objects.exists()
    (event,) = AuditEvent.objects.filter(action="writeback.drift.denied")
    assert event.actor == helpdesk and "Only help desk for this mailbox's OU" in event.reason
    _login(client, make_user, "audrey", Role.AUDITOR)  # sees it, may not repair it
    client.post(f"/drift/{finding.pk}/repair/")
    assert not WritebackTask.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_bulk_repair_confirms_the_count_then_repairs_the_filtered_findings(client, make_user, tenant):
    admin = _login(client, make_user, "adam", Role.ADMIN)
    response = client.get("/drift/repair/", {"ou": SALES})
    assert response.status_code == 200 and b"Repair 2 findings?" in response.content
    response = client.post(f"/drift/repair/?ou={SALES}", {"reason": "monthly clean-up"})
    assert response.status_code == 302
    tasks = list(WritebackTask.objects.all())
    assert [task.mailbox_id for task in tasks] == [tenant["sales"].pk]  # one task for the mailbox's two findings
    assert DriftFinding.objects.filter(repair_task=tasks[0]).count() == 2
    assert DriftFinding.objects.get(pk=tenant["finance_finding"].pk).repair_task is None
    event = AuditEvent.objects.get(action="writeback.drift.bulk_repair")
    assert event.actor == admin and event.reason == "monthly clean-up" and len(event.after["finding_ids"]) == 2
    assert b"Repair 0 findings?" in client.get("/drift/repair/", {"ou": SALES}).content  # already on their way


@pytest.mark.django_db
def test_the_empty_page_says_why(client, make_user, db):
    _login(client, make_user, "adam", Role.ADMIN)
    assert b"No drift scan has completed yet" in client.get("/drift/").content
    DriftScan.objects.create(mode=DriftScan.Mode.FULL, state=DriftScan.State.DONE, finished_at=timezone.now())
    assert b"agreed on every written-back attribute" in client.get("/drift/").content


@pytest.mark.django_db
def test_scan_now_is_for_administrators(client, make_user, db):
    _login(client, make_user, "sally", Role.HELPDESK, scopes=(SALES,))
    client.post("/drift/scan/")
    assert not DriftScan.objects.exists()
    admin = _login(client, make_user, "adam", Role.ADMIN)
    assert client.post("/drift/scan/").status_code == 302
    scan = DriftScan.objects.get()
    assert scan.mode == DriftScan.Mode.FULL and scan.requested_by == admin
    assert AuditEvent.objects.filter(action="writeback.drift_scan.requested", actor=admin).exists()
    assert b"is already queued" in client.get("/drift/").content


@pytest.mark.django_db(transaction=True)
def test_the_mailbox_page_shows_a_failed_writeback_and_offers_its_retry(client, make_user, tenant):
    mailbox = tenant["sales"]
    task = WritebackTask.objects.create(
        mailbox=mailbox, desired={"CustomAttribute1": "cloud"}, source="manual", state=WritebackTask.State.FAILED,
        attempts=1, error="No directory entry under DC=corp has objectGUID 1234.", finished_at=timezone.now(),
    )  # fmt: skip
    _login(client, make_user, "audrey", Role.AUDITOR)
    page = client.get(f"/mailboxes/{mailbox.pk}/").content.decode()
    assert "No directory entry under DC=corp has objectGUID 1234." in page and "Retry" not in page

    helpdesk = _login(client, make_user, "sally", Role.HELPDESK, scopes=(SALES,))
    page = client.get(f"/mailboxes/{mailbox.pk}/").content.decode()
    assert 'data-testid="writeback-retry"' in page
    confirm = client.get(f"/mailboxes/{mailbox.pk}/writeback/{task.pk}/retry/", HTTP_HX_REQUEST="true")
    assert b'data-testid="writeback-retry-form"' in confirm.content
    done = client.post(
        f"/mailboxes/{mailbox.pk}/writeback/{task.pk}/retry/", {"reason": "fixed"}, HTTP_HX_REQUEST="true"
    )
    assert b'data-testid="writeback-retried"' in done.content
    task.refresh_from_db()
    assert task.state == WritebackTask.State.QUEUED and task.attempts == 0
    event = AuditEvent.objects.get(action="writeback.task.retried")
    assert event.actor == helpdesk and event.reason == "fixed"


@pytest.mark.django_db
def test_an_older_failed_writeback_explains_why_it_cannot_be_retried(client, make_user, tenant):
    mailbox = tenant["sales"]
    failed = WritebackTask.objects.create(
        mailbox=mailbox, source="manual", state=WritebackTask.State.FAILED, error="refused"
    )
    WritebackTask.objects.create(mailbox=mailbox, source="manual", state=WritebackTask.State.DONE)
    _login(client, make_user, "sally", Role.HELPDESK, scopes=(SALES,))
    page = client.get(f"/mailboxes/{mailbox.pk}/").content.decode()
    assert 'data-testid="writeback-retry"' not in page and 'data-testid="writeback-state">Done' in page
    response = client.post(f"/mailboxes/{mailbox.pk}/writeback/{failed.pk}/retry/", HTTP_HX_REQUEST="true")
    assert b"A newer writeback" in response.content
    failed.refresh_from_db()
    assert failed.state == WritebackTask.State.FAILED
