"""The portal shell's pages over HTTP: sign-in, dashboard, health, audit browser and exports, roles, job dashboard."""

import csv
import io
import json
import re
import socket
from datetime import timedelta
from urllib.parse import quote

import django_rq
import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rq import SimpleWorker

from portal.audit import audit_record
from portal.dn import normalize_dn
from portal.models import AuditEvent, RoleAssignment, User
from portal.roles import Action, Role, may
from portal.views.audit import EXPORT_FIELDS, PAGE_SIZE
from soa.choices import Authority
from soa.models import Mailbox
from tests.conftest import PASSWORD

SALES = "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"
MARKETING = "OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com"
NON_ADMIN_ROLES = [role for role in Role if role is not Role.ADMIN]

# What each role must find on its dashboard: written out, not derived from ROLE_ACTIONS, so a change to the
# role table that changes what people see makes this test fail and get looked at.
NAVIGATION = {
    Role.HELPDESK: ["Dashboard", "Mailboxes", "Bulk edits", "Drift"],
    Role.WAVE_OPERATOR: ["Dashboard", "Mailboxes", "Waves", "Readiness", "Bulk edits"],
    Role.APPROVER: ["Dashboard", "Mailboxes", "Waves", "Readiness"],
    Role.AUDITOR: ["Dashboard", "Mailboxes", "Waves", "Readiness", "Audit log", "Drift"],
    Role.ADMIN: [
        "Dashboard",
        "Mailboxes",
        "Waves",
        "Readiness",
        "Bulk edits",
        "Audit log",
        "Drift",
        "Inventory",
        "Roles",
        "Connections",
        "Background jobs",
    ],
}
TILES = {
    Role.HELPDESK: {"mailboxes"},
    Role.WAVE_OPERATOR: {"mailboxes"},
    Role.APPROVER: {"mailboxes"},
    Role.AUDITOR: {"mailboxes", "audit", "import"},
    Role.ADMIN: {"mailboxes", "audit", "import", "queues"},
}


def _signed_in(client, make_user, username: str, *roles, **kwargs) -> User:
    user = make_user(username, *roles, **kwargs)
    client.force_login(user)
    return user


def _nav_labels(response) -> list[str]:
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', response.content.decode(), re.S)
    return re.findall(r"<a [^>]*>([^<]+)</a>", nav.group(1)) if nav else []


def _tiles(response) -> set[str]:
    return set(re.findall(r'data-testid="tile-([a-z]+)"', response.content.decode()))


def _event(actor=None, action: str = "test.thing.done", **kwargs) -> AuditEvent:
    with transaction.atomic():
        return audit_record(actor=actor, action=action, **kwargs)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _body(response) -> str:
    return b"".join(response.streaming_content).decode()


# --- signing in and out ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_login_page_renders_a_form_with_csrf_token(client):
    response = client.get("/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="username"' in html and 'name="password"' in html and 'name="csrfmiddlewaretoken"' in html
    assert _nav_labels(response) == []


@pytest.mark.django_db
def test_wrong_password_shows_the_error_and_signs_nobody_in(client, make_user):
    make_user("helen", Role.HELPDESK)
    response = client.post("/login/", {"username": "helen", "password": "not the password"})
    assert response.status_code == 200
    assert "Your username and password did not match" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_deactivated_user_cannot_sign_in(client, make_user):
    user = make_user("gone", Role.ADMIN)
    user.is_active = False
    user.save(update_fields=["is_active"])
    response = client.post("/login/", {"username": "gone", "password": PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in client.session


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
def test_after_login_the_dashboard_shows_exactly_the_roles_links_and_tiles(client, make_user, role):
    make_user("person", role)
    response = client.post("/login/", {"username": "person", "password": PASSWORD}, follow=True)
    assert response.redirect_chain == [("/", 302)]
    assert response.status_code == 200
    assert _nav_labels(response) == NAVIGATION[role]
    assert _tiles(response) == TILES[role]
    assert f'<span class="roles">{role.value}</span>' in response.content.decode()


@pytest.mark.django_db
def test_user_without_a_role_sees_only_the_dashboard_and_is_told_why(client, make_user):
    _signed_in(client, make_user, "newcomer")
    response = client.get("/")
    assert _nav_labels(response) == ["Dashboard"]
    assert _tiles(response) == set()
    assert "holds no role yet" in response.content.decode()


@pytest.mark.django_db
def test_login_returns_to_the_page_asked_for(client, make_user):
    make_user("audrey", Role.AUDITOR)
    assert client.get("/audit/").url == "/login/?next=/audit/"
    response = client.post("/login/?next=/audit/", {"username": "audrey", "password": PASSWORD, "next": "/audit/"})
    assert response.status_code == 302 and response.url == "/audit/"


@pytest.mark.django_db
def test_anonymous_dashboard_redirects_to_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response.url == "/login/?next=/"


@pytest.mark.django_db
def test_logout_is_post_only_and_ends_the_session(client, make_user):
    _signed_in(client, make_user, "helen", Role.HELPDESK)
    assert client.get("/logout/").status_code == 405
    assert client.get("/").status_code == 200  # the GET did not sign anyone out
    response = client.post("/logout/")
    assert response.status_code == 302 and response.url == "/login/"
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302


# --- dashboard ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_mailbox_tile_counts_only_the_users_scope(client, make_user):
    for dn, authority in [
        ("CN=a,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com", Authority.CLOUD),
        ("CN=b,OU=Sales,OU=Corp,DC=corp,DC=example,DC=com", Authority.ON_PREM),
        ("CN=c,OU=Marketing,OU=Corp,DC=corp,DC=example,DC=com", Authority.CLOUD),
    ]:
        Mailbox.objects.create(dn=dn, dn_norm=normalize_dn(dn), upn="x@example.com", authority=authority)
    _signed_in(client, make_user, "helen", Role.HELPDESK, scopes=(SALES,))
    assert client.get("/").context["mailboxes"] == {"total": 2, "cloud": 1, "on_prem": 1, "drifted": 0}


@pytest.fixture
def writeback_queue():
    # "auto": put jobs in Redis at once; the default waits for a commit, which a test's transaction never makes.
    queue = django_rq.get_queue("writeback", commit_mode="auto")
    queue.empty()
    yield queue
    queue.empty()


@pytest.mark.django_db
def test_queue_tile_counts_jobs_waiting_in_the_test_redis(client, make_user, writeback_queue):
    writeback_queue.enqueue("builtins.print", "never run")
    _signed_in(client, make_user, "root", Role.ADMIN)
    response = client.get("/")
    assert response.context["queues"]["writeback"] == 1
    assert "<dt>writeback</dt><dd>1 waiting</dd>" in response.content.decode()


@pytest.mark.django_db
def test_queue_tile_says_so_when_redis_is_unreachable(client, make_user, settings):
    _signed_in(client, make_user, "root", Role.ADMIN)
    unreachable = f"redis://127.0.0.1:{_closed_port()}/0"
    settings.RQ_QUEUES = {name: {**config, "URL": unreachable} for name, config in settings.RQ_QUEUES.items()}
    response = client.get("/")
    assert response.status_code == 200
    assert "Redis is unreachable" in response.content.decode()


# --- /healthz -------------------------------------------------------------------------------------------------


@pytest.fixture
def periodic_armed():
    """Every periodic job scheduled in the session's Redis, as a running worker leaves them; removed afterwards so
    no later test's worker runs one."""
    from writeback.periodic import PERIODIC, periodic_arm

    periodic_arm()
    yield
    for periodic in PERIODIC:
        job = periodic.chain.pending()
        if job is not None:
            periodic.chain.queue().scheduled_job_registry.remove(job, delete_job=True)
        periodic.chain.queue().connection.delete(periodic.chain.next_key)


@pytest.mark.django_db
def test_healthz_is_ok_for_anonymous_callers_without_detail(client, periodic_armed):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["down"] == [] and body["degraded"] == []
    assert set(body["components"]) == {"database", "redis", "directory", "periodic", "waves", "exchange budget"}
    assert all(component["ok"] for component in body["components"].values())
    assert not any("detail" in component for component in body["components"].values())
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_healthz_shows_detail_to_an_administrator_only(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    assert not any("detail" in c for c in client.get("/healthz").json()["components"].values())
    _signed_in(client, make_user, "root", Role.ADMIN)
    components = client.get("/healthz").json()["components"]
    assert components["redis"]["detail"] == "PONG"
    assert components["database"]["detail"] == connection.vendor
    assert components["directory"]["detail"].startswith("ldap")


@pytest.mark.django_db
def test_healthz_names_the_directory_when_ldap_is_unreachable(client, settings):
    settings.LDAP_URL = f"ldap://127.0.0.1:{_closed_port()}"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down" and body["down"] == ["directory"]
    assert body["components"]["database"]["ok"] and body["components"]["redis"]["ok"]


@pytest.mark.django_db
def test_healthz_names_redis_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["down"] == ["redis"]


@pytest.mark.django_db
def test_healthz_refuses_post(client):
    assert client.post("/healthz").status_code == 405


# --- X-Request-ID ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_well_formed_request_id_is_echoed(client):
    response = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:0001.abcd"})
    assert response["X-Request-ID"] == "lb-7f3a:0001.abcd"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sent",
    ["<script>alert(1)</script>", "id with spaces 12345", "short", "x" * 65, "abc123456;DROP TABLE portal_user"],
)
def test_a_malformed_request_id_is_replaced(client, sent):
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


@pytest.mark.django_db
def test_a_request_without_id_gets_a_fresh_one_each_time(client):
    first, second = client.get("/healthz")["X-Request-ID"], client.get("/healthz")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


@pytest.mark.django_db
def test_the_request_id_reaches_the_audit_event(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    client.post("/audit/verify/", headers={"X-Request-ID": "trace-0042-verify"})
    assert AuditEvent.objects.order_by("-id").first().correlation_id == "trace-0042-verify"


# --- audit browser --------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "status"), [(Role.AUDITOR, 200), (Role.ADMIN, 200), (Role.HELPDESK, 403)])
def test_audit_log_is_open_to_roles_with_audit_view(client, make_user, role, status):
    _signed_in(client, make_user, "person", role)
    assert client.get("/audit/").status_code == status


@pytest.mark.django_db
def test_audit_log_redirects_anonymous_to_login(client):
    response = client.get("/audit/")
    assert response.status_code == 302 and response.url.startswith("/login/")


@pytest.fixture
def history(make_user):
    """A few events by named people, besides the role assignments make_user records as the system."""
    alice, bob = make_user("alice"), make_user("bob")
    return {
        "alice_wave": _event(alice, "soa.wave.approved"),
        "bob_mailbox": _event(bob, "soa.mailbox.edited"),
        "system_writeback": _event(None, "writeback.task.completed"),
    }


def _listed(response) -> set[int]:
    return {event.pk for event in response.context["page"].object_list}


@pytest.mark.django_db
def test_audit_log_filters_by_actor(client, make_user, history):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    assert _listed(client.get("/audit/", {"actor": "ALI"})) == {history["alice_wave"].pk}


@pytest.mark.django_db
def test_audit_log_filters_by_action_prefix(client, make_user, history):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    assert _listed(client.get("/audit/", {"action": "soa."})) == {history["alice_wave"].pk, history["bob_mailbox"].pk}
    assert _listed(client.get("/audit/", {"action": "mailbox"})) == set()  # a prefix, not a substring


@pytest.mark.django_db
def test_audit_log_filters_by_time_window(client, make_user, history):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    now = timezone.now()
    hour_ago, in_an_hour = (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()
    everything = set(AuditEvent.objects.values_list("pk", flat=True))
    assert _listed(client.get("/audit/", {"since": hour_ago, "until": in_an_hour})) == everything
    assert _listed(client.get("/audit/", {"since": in_an_hour})) == set()
    assert _listed(client.get("/audit/", {"until": hour_ago})) == set()


@pytest.mark.django_db
def test_audit_log_filters_by_object_and_correlation_id(client, make_user, history):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    traced = _event(
        action="test.traced",
        object_id="mbx-7731",
        object_repr="alice.able@example.com",
        correlation_id="trace-00000042",
    )
    assert _listed(client.get("/audit/", {"correlation_id": "trace-00000042"})) == {traced.pk}
    assert _listed(client.get("/audit/", {"object": "mbx-7731"})) == {traced.pk}
    assert _listed(client.get("/audit/", {"object": "ALICE.ABLE"})) == {traced.pk}


@pytest.mark.django_db
def test_audit_log_reports_an_inverted_time_window(client, make_user, history):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    now = timezone.now()
    response = client.get("/audit/", {"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == ["'From' must be before 'Until'."]
    assert "must be before" in response.content.decode()
    assert _listed(response) == set()  # listing everything under a filter the user thinks applied would mislead


@pytest.mark.django_db
def test_audit_log_pages_by_fifty_newest_first(client, make_user):
    for number in range(PAGE_SIZE + 7):
        _event(action=f"test.bulk.{number}")
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    first = client.get("/audit/", {"action": "test.bulk."})
    assert first.context["count"] == PAGE_SIZE + 7 and not first.context["more"]
    assert len(first.context["page"].object_list) == PAGE_SIZE
    assert first.context["page"].object_list[0].action == f"test.bulk.{PAGE_SIZE + 6}"
    older = first.context["page"].older
    assert f'href="?action=test.bulk.&amp;after={quote(older, safe="/")}"' in first.content.decode()
    second = client.get("/audit/", {"action": "test.bulk.", "after": older})
    assert [event.action for event in second.context["page"].object_list] == [
        f"test.bulk.{n}" for n in range(6, -1, -1)
    ]
    assert second.context["page"].older is None and second.context["page"].newer is not None


@pytest.mark.django_db
def test_htmx_request_gets_only_the_results_partial(client, make_user, history):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    response = client.get("/audit/", {"action": "soa."}, headers={"HX-Request": "true"})
    html = response.content.decode().strip()
    # The live count (filled in place, out of band), then the results.
    assert html.startswith('<p class="count" id="audit-count"') and 'hx-swap-oob="innerHTML"' in html
    assert '<div id="audit-results">' in html and html.endswith("</div>")
    assert "<html" not in html and 'class="filters"' not in html and 'aria-label="Main"' not in html
    assert "soa.wave.approved" in html and "writeback.task.completed" not in html
    full = client.get("/audit/", {"action": "soa."})
    assert '<div id="audit-results">' in full.content.decode() and "<html" in full.content.decode()


@pytest.mark.django_db
def test_htmx_filter_with_an_inverted_time_window_shows_the_error(client, make_user, history):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    now = timezone.now()
    window = {"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()}
    response = client.get("/audit/", window, headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert '<div id="audit-results">' in html and "<html" not in html
    assert "must be before" in html  # inside the swapped partial, where the user looks
    assert 'hx-swap-oob="innerHTML">0 events</p>' in html and "<table>" not in html


@pytest.mark.django_db
def test_export_and_verify_controls_appear_only_for_the_auditor(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    html = client.get("/audit/").content.decode()
    assert "Export CSV" in html and "Verify the hash chain" in html
    _signed_in(client, make_user, "root", Role.ADMIN)
    html = client.get("/audit/").content.decode()
    assert "Export CSV" not in html and "Verify the hash chain" not in html


# --- audit export ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_csv_export_streams_every_event_and_records_itself(client, make_user, history):
    auditor = _signed_in(client, make_user, "audrey", Role.AUDITOR)
    response = client.get("/audit/export.csv")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(r'attachment; filename="soa-audit-\d{8}T\d{6}Z\.csv"', response["Content-Disposition"])
    rows = list(csv.reader(io.StringIO(_body(response))))
    assert rows[0] == EXPORT_FIELDS
    exported = {int(row[0]) for row in rows[1:]}
    assert exported == set(AuditEvent.objects.values_list("pk", flat=True))
    record = AuditEvent.objects.get(action="portal.audit.exported")
    assert record.actor == auditor and record.after == {"format": "csv", "filters": {}}


@pytest.mark.django_db
def test_jsonl_export_streams_the_filtered_events(client, make_user, history):
    auditor = _signed_in(client, make_user, "audrey", Role.AUDITOR)
    response = client.get("/audit/export.jsonl", {"action": "soa."})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    records = [json.loads(line) for line in _body(response).splitlines()]
    assert [record["id"] for record in records] == [history["alice_wave"].pk, history["bob_mailbox"].pk]
    assert set(records[0]) == set(EXPORT_FIELDS)
    assert records[0]["actor_name"] == "alice" and records[0]["hash"] == history["alice_wave"].hash
    exported = AuditEvent.objects.get(action="portal.audit.exported")
    assert exported.actor == auditor
    assert exported.after == {"format": "jsonl", "filters": {"action": "soa."}}


@pytest.mark.django_db
@pytest.mark.parametrize("formula", ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)"])
def test_csv_export_neutralises_cells_a_spreadsheet_would_run(client, make_user, formula):
    _event(action="test.formula", reason=formula, object_repr=formula)
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    rows = list(csv.DictReader(io.StringIO(_body(client.get("/audit/export.csv", {"action": "test.formula"})))))
    assert len(rows) == 1
    assert rows[0]["reason"] == "'" + formula and rows[0]["object_repr"] == "'" + formula


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.ADMIN, Role.HELPDESK])
def test_export_needs_audit_export(client, make_user, role):
    _signed_in(client, make_user, "person", role)
    events = AuditEvent.objects.count()
    assert client.get("/audit/export.csv").status_code == 403
    assert AuditEvent.objects.count() == events  # a refused export is not recorded as one


@pytest.mark.django_db
def test_export_refuses_an_unknown_format(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    response = client.get("/audit/export.xml")
    assert response.status_code == 400 and b"csv or jsonl" in response.content
    assert not AuditEvent.objects.filter(action="portal.audit.exported").exists()


@pytest.mark.django_db
def test_export_refuses_invalid_filters(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    now = timezone.now()
    response = client.get("/audit/export.csv", {"since": now.isoformat(), "until": (now - timedelta(1)).isoformat()})
    assert response.status_code == 400 and b"must be before" in response.content
    assert not AuditEvent.objects.filter(action="portal.audit.exported").exists()


# --- audit verify ---------------------------------------------------------------------------------------------


def _run_verification_jobs() -> None:
    queue = django_rq.get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


@pytest.mark.django_db
def test_verify_runs_as_a_job_and_the_page_polls_for_its_result(
    client, make_user, history, django_capture_on_commit_callbacks
):
    auditor = _signed_in(client, make_user, "audrey", Role.AUDITOR)
    django_rq.get_queue("default").empty()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/audit/verify/", headers={"HX-Request": "true"})
    page = response.content.decode()
    assert response.status_code == 200 and "<html" not in page
    assert "Verifying the hash chain in the background" in page
    (poll,) = re.findall(r'hx-get="(/audit/verify/audit-verify-[0-9a-f]{32}/)" hx-trigger="every 2s"', page)
    requested = AuditEvent.objects.order_by("-id").first()
    assert (requested.action, requested.actor, requested.object_id) == (
        "portal.audit.verify_requested", auditor, poll.split("/")[-2],
    )  # fmt: skip
    assert "in the background" in client.get(poll, headers={"HX-Request": "true"}).content.decode()

    _run_verification_jobs()
    done = client.get(poll, headers={"HX-Request": "true"}).content.decode()
    assert "The chain is intact" in done and "hx-trigger" not in done
    record = AuditEvent.objects.get(action="portal.audit.verified")
    assert record.actor == auditor and record.correlation_id == poll.split("/")[-2]
    assert record.after["checked"] == requested.pk and record.after["broken_at"] is None
    assert f"{requested.pk} events verified" in done
    # Without htmx the same address is a page of its own.
    assert "<html" in client.get(poll).content.decode()


@pytest.mark.django_db
def test_verify_without_htmx_redirects_to_the_verification_page(client, make_user, django_capture_on_commit_callbacks):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/audit/verify/")
    assert response.status_code == 302 and re.fullmatch(r"/audit/verify/audit-verify-[0-9a-f]{32}/", response.url)


@pytest.mark.django_db(transaction=True)  # django-rq queues on commit: the refused connection must come in the view
def test_verify_says_so_when_the_job_queue_is_unreachable(client, make_user, settings):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    settings.RQ_QUEUES = {name: {**config, "URL": f"redis://127.0.0.1:{port}/0"} for name, config in
                          settings.RQ_QUEUES.items()}  # fmt: skip
    page = client.post("/audit/verify/", headers={"HX-Request": "true"}).content.decode()
    assert "could not be queued: the job queue (Redis) does not answer" in page and "hx-trigger" not in page
    assert AuditEvent.objects.filter(action="portal.audit.verify_requested").exists()


@pytest.mark.django_db
def test_verification_page_refuses_a_malformed_id(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    assert client.get("/audit/verify/audit-verify-nope/").status_code == 400


@pytest.mark.django_db
def test_verify_refuses_get(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    assert client.get("/audit/verify/").status_code == 405
    assert not AuditEvent.objects.filter(action="portal.audit.verified").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.ADMIN, Role.HELPDESK])
def test_verify_needs_audit_verify(client, make_user, role):
    _signed_in(client, make_user, "person", role)
    assert client.post("/audit/verify/").status_code == 403


# --- roles page -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_roles_page_lists_assignments_for_the_admin(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    response = client.get("/roles/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"<code>{SALES}</code>" in html and "Tenant-wide" in html
    assert {(a.user.username, a.role.name) for a in response.context["assignments"]} == {
        ("helen", "helpdesk"),
        ("root", "admin"),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_roles_page_is_closed_to_other_roles(client, make_user, role):
    _signed_in(client, make_user, "person", role)
    assert client.get("/roles/").status_code == 403
    assert client.post("/roles/assign/", {"user": 1, "role": "admin", "tenant_wide": "on"}).status_code == 403


@pytest.mark.django_db
def test_roles_page_queries_do_not_grow_with_assignments(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    make_user("u0", Role.HELPDESK, scopes=(SALES,))
    with CaptureQueriesContext(connection) as few:
        client.get("/roles/")
    for number in range(1, 10):
        make_user(f"u{number}", Role.HELPDESK, scopes=(SALES, MARKETING))
    with CaptureQueriesContext(connection) as many:
        client.get("/roles/")
    assert len(many) == len(few)


@pytest.mark.django_db
def test_admin_assigns_a_scoped_role_through_the_form(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    bob = make_user("bob")
    data = {"user": bob.pk, "role": "helpdesk", "scopes": f"{SALES}\r\n\r\n{MARKETING}\r\n", "reason": "new starter"}
    response = client.post("/roles/assign/", data, follow=True)
    assert response.redirect_chain == [("/roles/", 302)]
    assert "bob now holds the helpdesk role." in response.content.decode()
    assignment = RoleAssignment.objects.get(user=bob)
    assert not assignment.tenant_wide
    assert set(assignment.scopes.values_list("base_dn", flat=True)) == {SALES, MARKETING}
    event = AuditEvent.objects.order_by("-id").first()
    assert (event.action, event.actor_name, event.reason) == ("portal.role.assigned", "root", "new starter")


@pytest.mark.django_db
def test_a_refused_assignment_shows_the_reason_on_the_page(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    audrey = make_user("audrey", Role.AUDITOR)
    data = {"user": audrey.pk, "role": "helpdesk", "tenant_wide": "on", "reason": "extra duty"}
    response = client.post("/roles/assign/", data)
    assert response.status_code == 200
    assert "cannot be combined with helpdesk" in response.content.decode()
    assert set(audrey.role_assignments.values_list("role__name", flat=True)) == {"auditor"}


@pytest.mark.django_db
def test_assigning_needs_a_reason(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    bob = make_user("bob")
    response = client.post("/roles/assign/", {"user": bob.pk, "role": "helpdesk", "tenant_wide": "on"})
    assert response.status_code == 200 and response.context["form"].errors["reason"]
    assert not bob.role_assignments.exists()


@pytest.mark.django_db
def test_assigning_without_a_csrf_token_is_refused(make_user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user("root", Role.ADMIN))
    bob = make_user("bob")
    data = {"user": bob.pk, "role": "helpdesk", "tenant_wide": "on", "reason": "new starter"}
    assert browser.post("/roles/assign/", data).status_code == 403
    assert not bob.role_assignments.exists()
    browser.get("/roles/")  # sets the CSRF cookie, as a browser would get it
    token = browser.cookies["csrftoken"].value
    assert browser.post("/roles/assign/", {**data, "csrfmiddlewaretoken": token}).status_code == 302
    assert bob.role_assignments.filter(role__name="helpdesk").exists()


@pytest.mark.django_db
def test_revoking_asks_for_confirmation_then_revokes_with_the_reason(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    bob = make_user("bob", Role.HELPDESK)
    assignment = bob.role_assignments.get()
    url = f"/roles/{assignment.pk}/revoke/"
    confirmation = client.get(url)
    assert confirmation.status_code == 200
    assert "Revoke helpdesk from bob?" in confirmation.content.decode()
    assert RoleAssignment.objects.filter(pk=assignment.pk).exists()
    unexplained = client.post(url, {"reason": ""})
    assert unexplained.status_code == 200 and unexplained.context["form"].errors["reason"]
    assert RoleAssignment.objects.filter(pk=assignment.pk).exists()
    response = client.post(url, {"reason": "left the company"}, follow=True)
    assert response.redirect_chain == [("/roles/", 302)]
    assert "Revoked helpdesk from bob." in response.content.decode()
    assert not RoleAssignment.objects.filter(pk=assignment.pk).exists()
    event = AuditEvent.objects.order_by("-id").first()
    assert (event.action, event.reason) == ("portal.role.revoked", "left the company")


@pytest.mark.django_db
def test_revoking_ones_own_admin_role_shows_the_refusal(client, make_user):
    root = _signed_in(client, make_user, "root", Role.ADMIN)
    assignment = root.role_assignments.get()
    response = client.post(f"/roles/{assignment.pk}/revoke/", {"reason": "oops"})
    assert response.status_code == 200
    assert "You cannot change your own roles" in response.content.decode()
    assert RoleAssignment.objects.filter(pk=assignment.pk).exists()


@pytest.mark.django_db
def test_revoking_is_closed_to_other_roles(client, make_user):
    bob = make_user("bob", Role.APPROVER)
    _signed_in(client, make_user, "helen", Role.HELPDESK)
    url = f"/roles/{bob.role_assignments.get().pk}/revoke/"
    assert client.get(url).status_code == 403
    assert client.post(url, {"reason": "because"}).status_code == 403
    assert bob.role_assignments.exists()


@pytest.mark.django_db
def test_revoking_an_unknown_assignment_is_404(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    assert client.get("/roles/999999/revoke/").status_code == 404


# --- job dashboard and Django admin ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_job_dashboard_opens_for_the_admin(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)
    response = client.get("/jobs/")
    assert response.status_code == 200
    assert "writeback" in response.content.decode()


@pytest.mark.django_db
def test_job_dashboard_queue_page_opens_for_the_admin(client, make_user, writeback_queue):
    writeback_queue.enqueue("builtins.print", "never run")
    _signed_in(client, make_user, "root", Role.ADMIN)
    response = client.get("/jobs/queues/1/")  # queues are numbered by name: default 0, writeback 1
    assert response.status_code == 200
    assert response.context["queue"].name == "writeback" and "builtins.print" in response.content.decode()


@pytest.mark.django_db
def test_job_stats_json_is_for_the_admin_only(client, make_user):
    # django-rq lets any is_staff user or API-token holder read it; the portal asks for the admin role.
    assert client.get("/jobs/stats.json").status_code == 302
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    assert client.get("/jobs/stats.json").status_code == 403
    _signed_in(client, make_user, "root", Role.ADMIN)
    response = client.get("/jobs/stats.json")
    assert response.status_code == 200
    assert {queue["name"] for queue in response.json()["queues"]} == {"default", "writeback"}


@pytest.mark.django_db
def test_job_dashboard_is_closed_to_the_auditor(client, make_user):
    _signed_in(client, make_user, "audrey", Role.AUDITOR)
    assert client.get("/jobs/").status_code == 403
    assert client.get("/jobs/queues/0/").status_code == 403


@pytest.mark.django_db
def test_job_dashboard_is_closed_to_staff_without_the_admin_role(client):
    # is_staff alone (which django-rq checks) must not open it: the portal asks for the admin role.
    root = User.objects.create_superuser("superroot", password="irrelevant-for-this-test")
    client.force_login(root)
    assert client.get("/jobs/").status_code == 403


@pytest.mark.django_db
def test_job_dashboard_sends_anonymous_to_login(client):
    response = client.get("/jobs/")
    assert response.status_code == 302 and response.url == "/login/?next=/jobs/"


@pytest.mark.django_db
def test_helpdesk_cannot_enter_django_admin(client, make_user):
    _signed_in(client, make_user, "helen", Role.HELPDESK)
    response = client.get("/django-admin/")
    assert response.status_code == 302 and response.url.startswith("/django-admin/login/")
    client.logout()
    refused = client.post("/django-admin/login/", {"username": "helen", "password": PASSWORD})
    assert refused.status_code == 200
    assert "staff account" in refused.content.decode()
    assert client.get("/django-admin/").status_code == 302


@pytest.mark.django_db
def test_admin_role_cannot_edit_role_groups_in_django_admin(client, make_user):
    _signed_in(client, make_user, "root", Role.ADMIN)  # is_staff, so Django's admin lets them in
    helpdesk_group = Group.objects.get(name=Role.HELPDESK)
    permissions = set(helpdesk_group.permissions.all())
    everything = list(Permission.objects.values_list("pk", flat=True))
    assert client.get("/django-admin/auth/group/").status_code in (403, 404)
    response = client.post(
        f"/django-admin/auth/group/{helpdesk_group.pk}/change/", {"name": "helpdesk", "permissions": everything}
    )
    assert response.status_code in (403, 404)
    assert set(helpdesk_group.permissions.all()) == permissions


@pytest.mark.django_db
def test_a_superuser_cannot_redefine_a_role_through_django_admin(client, make_user):
    auditor_group = Group.objects.get(name=Role.AUDITOR)
    widened = [*auditor_group.permissions.values_list("pk", flat=True)]
    widened.append(Permission.objects.get(content_type__app_label="portal", codename="mailbox_edit").pk)
    client.force_login(User.objects.create_superuser("superroot", password="irrelevant-for-this-test"))
    client.post(f"/django-admin/auth/group/{auditor_group.pk}/change/", {"name": "auditor", "permissions": widened})
    audrey = make_user("audrey", Role.AUDITOR)
    assert not may(audrey, Action.MAILBOX_EDIT, SALES)


def test_not_found_and_not_allowed_are_portal_pages_that_reveal_nothing(client, make_user):
    """A mailbox outside the user's scope answers 404 like one that does not exist, on the portal's own page with its
    navigation; a page the roles do not include answers 403 the same way."""
    client.force_login(make_user("helen", Role.HELPDESK))
    missing = client.get("/mailboxes/999999/")
    assert missing.status_code == 404
    text = missing.content.decode()
    assert '<h1 id="error-title">No such mailbox</h1>' in text  # tenant-wide: nothing is outside her scope
    assert "Sign out" in text and "999999" not in text
    refused = client.get("/audit/")
    assert refused.status_code == 403 and '<h1 id="error-title">Not allowed</h1>' in refused.content.decode()
