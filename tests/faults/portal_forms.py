"""Every page of the portal's URL map, as the fault and fuzz tests need it (no tests here): for each URL name that
takes a POST, a builder that makes the state the form acts on and returns what a browser would send; for each other
name, why it takes no form. ``uncatalogued()`` names what the URL map has and this module does not know, so a new form
cannot be skipped silently: test_double_submit_every_form fails on it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import django_rq
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from portal.correlation import correlation_scope
from portal.group_roles import group_mapping_save
from portal.models import AuditEvent, GroupRoleMapping, RoleAssignment, SignInThrottle, User
from portal.roles import Role
from soa import jobs
from soa.choices import Authority, MemberState, TenantDefaultState, WaveState
from soa.models import Mailbox, PilotWave, TenantDefaultRequest, WaveMember
from soa.services.accepted_domains import accepted_domains_replace
from soa.services.approvals import wave_approve
from soa.services.change_apply import EXCHANGE, change_request_claim, change_request_finish
from soa.services.change_batches import change_batch_create, change_batch_pause
from soa.services.changes import change_request_create
from soa.services.tenant_default import tenant_default_request_create
from soa.services.wave_run import wave_pause, wave_start
from soa.services.waves import wave_submit
from tests.soa.test_wave_support import DOMAIN, make_mailbox, new_wave
from writeback.models import DriftFinding, WritebackTask

# Namespaces whose forms are Django's or the queue library's own, reached only by administrators: the admin site
# (its sign-in is the portal's, tested in tests/portal/test_signin.py) and the read-only job dashboard.
FOREIGN_NAMESPACES = {"admin", "django_rq"}


@dataclass
class Form:
    """One form as a browser sends it: where, what, as whom; ``second`` is another person entitled to send the same
    form from a browser of their own (None: nobody else may); ``htmx`` when the page sends it through htmx."""

    url: str
    data: dict[str, Any] | Callable[[], dict[str, Any]]
    user: User
    second: User | None = None
    htmx: bool = False
    fields: list[str] = field(default_factory=list)  # the fields the fuzz varies (default: the data's keys)

    def payload(self) -> dict[str, Any]:
        return self.data() if callable(self.data) else dict(self.data)


class People:
    """The cast a form needs, made on first use."""

    def __init__(self, make_user):
        self._make, self._made = make_user, {}

    def __getattr__(self, name: str) -> User:
        roles = {
            "op": Role.WAVE_OPERATOR, "op2": Role.WAVE_OPERATOR, "approver": Role.APPROVER, "approver2": Role.APPROVER,
            "help": Role.HELPDESK, "help2": Role.HELPDESK, "admin": Role.ADMIN, "admin2": Role.ADMIN,
            "auditor": Role.AUDITOR, "auditor2": Role.AUDITOR, "plain": None,
        }  # fmt: skip
        if name not in roles:
            raise AttributeError(name)
        if name not in self._made:
            self._made[name] = self._make(f"form-{name}", *filter(None, [roles[name]]))
        return self._made[name]


def _mailboxes(count: int, **fields) -> list[Mailbox]:
    tag = uuid.uuid4().hex[:6]
    return [make_mailbox(f"Form {tag} {index}", **fields) for index in range(count)]


def _wave(p: People, state: str) -> PilotWave:
    """A wave of two mailboxes built by ``op``, brought to ``state`` through the services (as the pages would)."""
    wave = new_wave(p.op, *_mailboxes(2), name=f"Form {uuid.uuid4().hex[:6]}", required_approvals=1)
    if state == WaveState.DRAFT:
        return wave
    wave_submit(actor=p.op, wave_id=wave.pk)
    if state == WaveState.SUBMITTED:
        return PilotWave.objects.get(pk=wave.pk)
    wave_approve(actor=p.approver, wave_id=wave.pk, acknowledge_warnings=True)
    if state == WaveState.APPROVED:
        return PilotWave.objects.get(pk=wave.pk)
    wave_start(actor=p.op2, wave_id=wave.pk)
    if state == WaveState.RUNNING:
        return PilotWave.objects.get(pk=wave.pk)
    if state == WaveState.PAUSED:
        return wave_pause(actor=p.op2, wave_id=wave.pk, reason="before the form")
    assert state == WaveState.COMPLETED
    now = timezone.now()
    WaveMember.objects.filter(wave=wave).update(state=MemberState.DONE, finished_at=now)
    Mailbox.objects.filter(wave_memberships__wave=wave).update(authority=Authority.CLOUD)
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.COMPLETED, finished_at=now)
    return PilotWave.objects.get(pk=wave.pk)


def _domains() -> None:
    with transaction.atomic():
        accepted_domains_replace(
            domains=[{"DomainName": DOMAIN, "DomainType": "Authoritative", "Default": True}], fetched_at=timezone.now()
        )


def _pending_change(p: People):
    """A help-desk edit waiting for approval (a new primary address is a sensitive operation)."""
    _domains()
    (mailbox,) = _mailboxes(1, authority=Authority.CLOUD, aliases=(f"second-{uuid.uuid4().hex[:6]}@{DOMAIN}",))
    alias = mailbox.addresses.filter(is_primary=False).first().address
    return change_request_create(
        actor=p.help, mailbox_id=mailbox.pk, operations=[{"op": "make_primary", "address": alias}], reason="ticket",
        base_version=mailbox.version, idempotency_key=f"pending-{uuid.uuid4().hex}",
    )  # fmt: skip


def _applied_edit(p: People) -> AuditEvent:
    """A help-desk edit applied as the apply job does (claim, then finish with the values read back): the event
    ``soa.change.applied`` an undo starts from."""
    (mailbox,) = _mailboxes(1, authority=Authority.CLOUD)
    request = change_request_create(
        actor=p.help, mailbox_id=mailbox.pk, operations=[{"op": "set_custom_attribute", "attribute": "CustomAttribute3",
        "value": "to undo"}], reason="ticket", base_version=mailbox.version, idempotency_key=f"e-{uuid.uuid4().hex}",
    )  # fmt: skip
    with correlation_scope(request.correlation_id):
        change_request_claim(request_id=request.pk)
        change_request_finish(request_id=request.pk, route=request.route, results={}, side=EXCHANGE,
                              values=request.desired)  # fmt: skip
    return AuditEvent.objects.get(action="soa.change.applied", object_id=str(request.pk))


def _batch(p: People, *, paused: bool = False):
    _domains()
    mailboxes = _mailboxes(2, authority=Authority.CLOUD)
    lines = [f"{m.primary_smtp},set,CustomAttribute2,bulk" for m in mailboxes]
    batch = change_batch_create(actor=p.help, lines=lines, file_name="edits.csv", reason="ticket",
                                idempotency_key=f"batch-{uuid.uuid4().hex}")  # fmt: skip
    if paused:
        change_batch_pause(actor=p.help, batch_id=batch.pk, reason="before the form")
    return batch


def _finding() -> DriftFinding:
    (mailbox,) = _mailboxes(1, authority=Authority.CLOUD, ad_guid=uuid.uuid4(), exo_object_id=uuid.uuid4())
    return DriftFinding.objects.create(
        mailbox=mailbox, attribute="CustomAttribute1", ad_value="ad", cloud_value="cloud"
    )


# -- the forms -----------------------------------------------------------------------------------------------------


def _wave_form(name: str, state: str, data: dict, *, user="op", second="op2", htmx=False):
    def build(p: People) -> Form:
        wave = _wave(p, state)
        return Form(reverse(name, args=[wave.pk]), data, getattr(p, user), second and getattr(p, second), htmx)

    return build


def _members(name: str, how: str):
    def build(p: People) -> Form:
        wave = _wave(p, WaveState.DRAFT)
        mailbox = _mailboxes(1)[0] if how != "remove" else wave.members.first().mailbox
        data = {
            "add": {"mailbox": [str(mailbox.pk)]},
            "remove": {"mailbox": [str(mailbox.pk)]},
            "filter": {"filter-q": mailbox.upn, "confirmed": "1"},
            "csv": {"text": mailbox.upn},
        }[how]
        return Form(reverse(name, args=[wave.pk]), data, p.op, p.op2)

    return build


def _member_retry(p: People) -> Form:
    wave = _wave(p, WaveState.PAUSED)
    member = wave.members.order_by("pk").first()
    WaveMember.objects.filter(pk=member.pk).update(state=MemberState.FAILED, attempts=5, last_error="gave up")
    return Form(reverse("wave_member_retry", args=[wave.pk, member.pk]), {}, p.op2, p.op)


def _wave_create(p: People) -> Form:
    data = {"name": f"Double {uuid.uuid4().hex[:6]}", "direction": "TO_CLOUD", "required_approvals": "1",
            "batch_size": "50", "max_rate": "5", "description": "sent twice"}  # fmt: skip
    return Form(reverse("wave_create"), data, p.op, p.op2)


def _change_confirm(p: People) -> Form:
    (mailbox,) = _mailboxes(1, authority=Authority.CLOUD)
    data = {"attribute": "CustomAttribute3", "value": "twice", "base_version": str(mailbox.version),
            "idempotency_key": f"confirm-{uuid.uuid4().hex}", "reason": "ticket 2"}  # fmt: skip
    url = reverse("change_confirm", args=[mailbox.pk, "set_custom_attribute"])
    return Form(url, data, p.help, p.help2, htmx=True)


def _change_preview(p: People) -> Form:
    (mailbox,) = _mailboxes(1, authority=Authority.CLOUD)
    data = {"attribute": "CustomAttribute3", "value": "twice", "base_version": str(mailbox.version)}
    url = reverse("change_preview", args=[mailbox.pk, "set_custom_attribute"])
    return Form(url, data, p.help, p.help2, htmx=True)


def _change_decision(kind: str, user: str, second: str | None):
    def build(p: People) -> Form:
        change = _pending_change(p)
        url = reverse(f"change_{kind}", args=[change.mailbox_id, change.pk])
        return Form(url, {"reason": f"{kind} it"}, getattr(p, user), second and getattr(p, second), htmx=True)

    return build


def _bulk_preview(p: People) -> Form:
    _domains()
    (mailbox,) = _mailboxes(1, authority=Authority.CLOUD)
    content = f"{mailbox.primary_smtp},set,CustomAttribute2,bulk\n".encode()

    def data() -> dict:
        return {"file": SimpleUploadedFile("edits.csv", content, content_type="text/csv")}

    return Form(reverse("bulk_preview"), data, p.help, p.help2, fields=["file"])


def _bulk_confirm(p: People) -> Form:
    _domains()
    mailboxes = _mailboxes(2, authority=Authority.CLOUD)
    text = "\n".join(f"{m.primary_smtp},set,CustomAttribute2,bulk" for m in mailboxes)
    data = {"text": text, "file_name": "edits.csv", "idempotency_key": f"bulk-{uuid.uuid4().hex}", "reason": "t"}
    # The second browser is the same person's: another person's confirmation is their own bulk edit, whose lines
    # meet this one's open requests at their turn (tests/soa/test_bulk_edits.py).
    return Form(reverse("bulk_confirm"), data, p.help, p.help)


def _bulk_control(name: str, paused: bool):
    def build(p: People) -> Form:
        batch = _batch(p, paused=paused)
        return Form(reverse(name, args=[batch.pk]), {"reason": "sent twice"}, p.help, p.admin)

    return build


def _undo(by_correlation: bool):
    def build(p: People) -> Form:
        event = _applied_edit(p)
        mailbox = Mailbox.objects.get(pk=event.after["mailbox"])
        data = {"reason": "undo the ticket", "idempotency_key": f"undo-{uuid.uuid4().hex}",
                f"version-{mailbox.pk}": str(mailbox.version)}  # fmt: skip
        url = (
            reverse("audit_undo_correlation", args=[event.correlation_id])
            if by_correlation
            else reverse("audit_undo", args=[event.pk])
        )
        # Another help desk's undo meets the first one's open request on the mailbox, and is refused.
        return Form(url, data, p.help, p.help2, fields=["reason", "idempotency_key", "acknowledge_conflicts"])

    return build


def _writeback_retry(p: People) -> Form:
    (mailbox,) = _mailboxes(1, authority=Authority.CLOUD, ad_guid=uuid.uuid4())
    task = WritebackTask.objects.create(
        mailbox=mailbox, desired={"CustomAttribute1": "staff"}, source="manual", state=WritebackTask.State.FAILED,
        attempts=8, error="gave up", finished_at=timezone.now(),
    )  # fmt: skip
    return Form(reverse("writeback_retry", args=[mailbox.pk, task.pk]), {"reason": "fixed"}, p.help, p.help2, True)


def _drift_repair(p: People) -> Form:
    finding = _finding()
    return Form(reverse("drift_repair", args=[finding.pk]), {"reason": "repair"}, p.admin, p.admin2)


def _drift_bulk_repair(p: People) -> Form:
    _finding()
    return Form(reverse("drift_bulk_repair"), {"reason": "repair all"}, p.admin, p.admin2)


def _role_assign(p: People) -> Form:
    data = {"user": str(p.plain.pk), "role": Role.AUDITOR.value, "tenant_wide": "on", "reason": "audit season"}
    return Form(reverse("role_assign"), data, p.admin, p.admin2)


def _role_revoke(p: People) -> Form:
    assignment = RoleAssignment.objects.get(user=p.help)
    return Form(reverse("role_revoke", args=[assignment.pk]), {"reason": "left"}, p.admin, p.admin2)


def _signin_lock_release(p: People) -> Form:
    now = timezone.now()
    lock = SignInThrottle.objects.create(
        kind=SignInThrottle.Kind.USERNAME, key=f"locked-{uuid.uuid4().hex[:6]}", failures=30, first_failure_at=now,
        last_failure_at=now, locked_until=now + dt.timedelta(minutes=15),
    )  # fmt: skip
    return Form(reverse("signin_lock_release", args=[lock.pk]), {"reason": "the user called"}, p.admin, p.admin2)


def _mapping(p: People) -> GroupRoleMapping:
    return group_mapping_save(actor=None, group_id=str(uuid.uuid4()), display_name=f"Group {uuid.uuid4().hex[:6]}",
                              role=Role.HELPDESK, scopes=["OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"])  # fmt: skip


def _group_mapping_add(p: People) -> Form:
    data = {"group_id": str(uuid.uuid4()), "display_name": "Wave operators", "role": Role.WAVE_OPERATOR.value,
            "tenant_wide": "on", "reason": "new team"}  # fmt: skip
    return Form(reverse("group_mapping_add"), data, p.admin, p.admin2)


def _group_mapping_edit(p: People) -> Form:
    mapping = _mapping(p)
    data = {"group_id": mapping.group_id, "display_name": "Sales help desk", "role": Role.HELPDESK.value,
            "scopes": "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com\nOU=Finance,OU=Corp,DC=corp,DC=example,DC=com",
            "reason": "Finance joins"}  # fmt: skip
    return Form(reverse("group_mapping_edit", args=[mapping.pk]), data, p.admin, p.admin2)


def _group_mapping_remove(p: People) -> Form:
    mapping = _mapping(p)
    return Form(reverse("group_mapping_remove", args=[mapping.pk]), {"reason": "group retired"}, p.admin, p.admin2)


def _no_prerequisite_run_waiting() -> None:
    """The state both prerequisite forms act on: no requested run of the checks still queued (one run at a time)."""
    from rq.job import Job

    from soa.prerequisites import CHECK_JOB_ID

    queue = django_rq.get_queue(jobs.QUEUE)
    queue.remove(CHECK_JOB_ID)
    if Job.exists(CHECK_JOB_ID, connection=queue.connection):
        Job.fetch(CHECK_JOB_ID, connection=queue.connection).delete()


def _prerequisite_canary(p: People) -> Form:
    _no_prerequisite_run_waiting()
    mailbox = _mailboxes(1)[0]
    return Form(reverse("prerequisite_canary"), {"identity": mailbox.upn, "confirm": "on"}, p.admin, p.admin2)


def _prerequisite_check(p: People) -> Form:
    _no_prerequisite_run_waiting()
    return Form(reverse("prerequisite_check"), {}, p.admin, p.admin2)


TENANT = "corp.onmicrosoft.com"


def _tenant_read() -> None:
    """What the tenant default page would have read from Exchange Online, in its cache (the catalogue has no
    emulator): the default off, the tenant named TENANT."""
    from django.conf import settings
    from django.core.cache import cache

    from writeback.tenant_default import CACHE_KEY, DefaultRead

    name = settings.EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY
    read = DefaultRead(read_at=timezone.now(), property_name=name, enabled=False, tenant_name=TENANT)
    cache.set(f"{CACHE_KEY}:{name}", read, 3600)


def _tenant_request(p: People, state: str = TenantDefaultState.PENDING) -> TenantDefaultRequest:
    _tenant_read()
    request = tenant_default_request_create(actor=p.admin, reason="all moved", tenant_name=TENANT,
                                            property_name="BlockExchangeProvisioningFromOnPremEnabled",
                                            enabled=False, blockers=[])  # fmt: skip
    TenantDefaultRequest.objects.filter(pk=request.pk).update(state=state, error="failed before")
    return request


def _tenant_default_request(p: People) -> Form:
    _tenant_read()
    return Form(reverse("tenant_default_request"), {"reason": "every mailbox has moved"}, p.admin, p.admin2)


def _tenant_default_form(name: str, state: str, data: dict, user: str, second: str | None):
    def build(p: People) -> Form:
        request = _tenant_request(p, state)
        return Form(reverse(name, args=[request.pk]), data, getattr(p, user), second and getattr(p, second))

    return build


def _simple(name: str, user: str, second: str | None, data: dict | None = None, htmx: bool = False):
    def build(p: People) -> Form:
        return Form(reverse(name), dict(data or {}), getattr(p, user), second and getattr(p, second), htmx)

    return build


S, A, R, P, C = WaveState.SUBMITTED, WaveState.APPROVED, WaveState.RUNNING, WaveState.PAUSED, WaveState.COMPLETED
FORMS: dict[str, Callable[[People], Form]] = {
    "wave_create": _wave_create,
    "wave_add_members": _members("wave_add_members", "add"),
    "wave_add_by_filter": _members("wave_add_by_filter", "filter"),
    "wave_add_from_csv": _members("wave_add_from_csv", "csv"),
    "wave_remove_members": _members("wave_remove_members", "remove"),
    "wave_submit": _wave_form("wave_submit", WaveState.DRAFT, {}),
    "wave_withdraw": _wave_form("wave_withdraw", S, {"reason": "not yet"}),
    "wave_cancel": _wave_form("wave_cancel", S, {"reason": "no longer needed"}),
    "wave_approve": _wave_form(
        "wave_approve", S, {"reason": "ok", "acknowledge_warnings": "on"}, user="approver", second="approver2"
    ),  # fmt: skip
    "wave_reject": _wave_form("wave_reject", S, {"reason": "not now"}, user="approver", second="approver2"),
    "wave_start": _wave_form("wave_start", A, {}, user="op2", second="op"),
    "wave_pause": _wave_form("wave_pause", R, {"reason": "hold"}, user="op2", second="op"),
    "wave_resume": _wave_form("wave_resume", P, {}, user="op2", second="op"),
    "wave_member_retry": _member_retry,
    "wave_rollback": _wave_form("wave_rollback", C, {}),
    "wave_edit": _wave_form(
        "wave_edit",
        WaveState.DRAFT,
        {
            "name": "Edited by the form",
            "description": "a plan",
            "required_approvals": 1,
            "batch_size": 10,
            "max_rate": 2.0,
            "window_start": "",
            "window_end": "",
        },
    ),  # fmt: skip
    # Two people copying a wave make two drafts, each their own; one person's repeat is the same copy.
    "wave_clone": _wave_form("wave_clone", C, {}, second=None),
    "change_preview": _change_preview,
    "change_confirm": _change_confirm,
    "change_approve": _change_decision("approve", "approver", "approver2"),
    "change_reject": _change_decision("reject", "approver", "approver2"),
    "change_cancel": _change_decision("cancel", "help", None),
    "bulk_preview": _bulk_preview,
    "bulk_confirm": _bulk_confirm,
    "bulk_pause": _bulk_control("bulk_pause", paused=False),
    "bulk_resume": _bulk_control("bulk_resume", paused=True),
    "bulk_cancel": _bulk_control("bulk_cancel", paused=False),
    "writeback_retry": _writeback_retry,
    "drift_repair": _drift_repair,
    "drift_bulk_repair": _drift_bulk_repair,
    "drift_scan": _simple("drift_scan", "admin", "admin2"),
    "inventory_start": _simple("inventory_start", "admin", "admin2", {"mode": "FULL"}),
    "role_assign": _role_assign,
    "role_revoke": _role_revoke,
    "signin_lock_release": _signin_lock_release,
    "group_mapping_add": _group_mapping_add,
    "group_mapping_edit": _group_mapping_edit,
    "group_mapping_remove": _group_mapping_remove,
    "audit_verify": _simple("audit_verify", "auditor", "auditor2", htmx=True),
    "audit_undo": _undo(by_correlation=False),
    "audit_undo_correlation": _undo(by_correlation=True),
    "connection_test": _simple("connection_test", "admin", "admin2", htmx=True),
    "prerequisite_check": _prerequisite_check,
    "prerequisite_version": _simple(
        "prerequisite_version",
        "admin",
        "admin2",
        {"version": "2.5.190.0", "seen_where": "SYNC01: Get-ADSyncGlobalSettings"},
    ),
    "prerequisite_canary": _prerequisite_canary,
    "logout": _simple("logout", "help", None),
    "tenant_default_request": _tenant_default_request,
    # A second approver's approval is the second of the two the switch needs, not a repeat: nobody else sends this one.
    "tenant_default_approve": _tenant_default_form(
        "tenant_default_approve", TenantDefaultState.PENDING, {"typed_name": TENANT}, "approver", None
    ),
    "tenant_default_retry": _tenant_default_form(
        "tenant_default_retry", TenantDefaultState.FAILED, {}, "admin", "admin2"
    ),
    "tenant_default_cancel": _tenant_default_form(
        "tenant_default_cancel", TenantDefaultState.PENDING, {"reason": "not now"}, "admin", "admin2"
    ),
}

# Forms whose every submission is its own act, as the person meant it: each is recorded, nothing else changes.
REPEATABLE = {
    "connection_test": "a test of the directory connection reads and reports; a second click tests again",
    "audit_verify": "each verification is a read-only job over the chain, requested and audited as such",
}

# URL names that take no form (GET only, or a POST-free page), and why.
NO_FORM = {
    "dashboard": "a page", "login": "the sign-in form: each sign-in is its own, throttled and audited "
    "(tests/portal/test_signin.py)", "healthz": "a probe", "audit_list": "a page", "audit_export": "a download",
    "mailbox_export": "a download", "wave_results_export": "a download",
    "readiness": "a page", "readiness_report": "a page laid out for printing", "readiness_export": "a download",
    "audit_verification": "polls a verification's result", "mailbox_list": "a page", "mailbox_detail": "a page",
    "change_edit": "opens an editor", "mailbox_changes": "a card the page polls", "wave_list": "a page",
    "wave_detail": "a page", "wave_preflight": "reads only: runs pre-flight and shows it",
    "wave_progress": "a partial the page polls", "wave_members": "a partial the page polls",
    "bulk_upload": "the upload page (its form posts to bulk_preview)",
    "bulk_detail": "a page", "mailbox_writeback": "a card the page polls", "drift": "a page", "inventory": "a page",
    "connections": "a page (its form posts to connection_test)", "role_list": "a page",
    "signin_locks": "a page",
    "entra_signin_start": "sends the browser to Entra ID's sign-in (tests/portal/test_entra_signin.py)",
    "entra_signin_callback": "Entra ID's redirect back, checked by msal and portal.entra_signin "
    "(tests/portal/test_entra_signin.py)",
    "group_mapping_list": "a page (its form posts to group_mapping_add)",
    "mailbox_timeline": "a page", "mailbox_as_of": "a page (its form is a GET)",
    "mailbox_compare": "a page (its form is a GET)",
    "tenant_default": "a page (its forms post to tenant_default_request, _approve, _retry and _cancel)",
}  # fmt: skip


TABLES = [
    model for label in ("portal", "soa", "writeback") for model in apps.get_app_config(label).get_models()
    if model._meta.managed and not model._meta.proxy
]  # fmt: skip


def jobs_waiting() -> int:
    total = 0
    for name in (jobs.QUEUE, jobs.WRITEBACK_QUEUE):
        queue = django_rq.get_queue(name)
        total += len(queue) + queue.scheduled_job_registry.count
    return total


class State:
    """Row counts of every table but the audit log's, the audit log's newest id, and the jobs waiting in Redis."""

    def __init__(self):
        self.rows = {model._meta.label: model.objects.count() for model in TABLES if model is not AuditEvent}
        self.last_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        self.jobs = jobs_waiting()

    def actions_since(self, earlier: State) -> list[str]:
        found = AuditEvent.objects.filter(id__gt=earlier.last_event, id__lte=self.last_event).order_by("id")
        return list(found.values_list("action", flat=True))

    def new_rows_since(self, earlier: State) -> dict[str, int]:
        return {label: n - earlier.rows[label] for label, n in self.rows.items() if n != earlier.rows[label]}


def url_names() -> set[str]:
    """Every named route of the URL map outside FOREIGN_NAMESPACES."""
    names: set[str] = set()

    def walk(patterns, namespace: str | None) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = pattern.namespace or namespace
                if inner not in FOREIGN_NAMESPACES:
                    walk(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern) and pattern.name and namespace not in FOREIGN_NAMESPACES:
                names.add(pattern.name)

    walk(get_resolver().url_patterns, None)
    return names


def uncatalogued() -> set[str]:
    return url_names() - set(FORMS) - set(NO_FORM)
