"""Shared pieces of the pilot-wave tests (no tests here): a tenant of mailboxes, the people, audit lookups.

Mailboxes are created ready to move to the cloud (both sides present, dir-synced, same values on both sides,
last changed three days ago); each test changes what it needs.
"""

import datetime as dt

import django_rq
from django.utils import timezone
from rq import SimpleWorker

from portal.dn import normalize_dn
from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, WaveDirection
from soa.models import Mailbox, MailboxAddress
from writeback import wave_jobs

CORP = "OU=Corp,DC=corp,DC=example,DC=com"
SALES = f"OU=Sales,{CORP}"
FINANCE = f"OU=Finance,{CORP}"
DOMAIN = "corp.example.com"


def make_mailbox(name: str, ou: str = SALES, *, aliases: tuple[str, ...] = (), **fields) -> Mailbox:
    """A mailbox ready to move to the cloud; ``fields`` override any column."""
    alias = name.lower().replace(" ", ".")
    dn = f"CN={name},{ou}"
    smtp = f"{alias}@{DOMAIN}"
    values = {
        "EmailAddresses": [f"SMTP:{smtp}", *(f"smtp:{a}" for a in aliases)],
        "WindowsEmailAddress": smtp,
        "CustomAttribute1": "staff",
        "HiddenFromAddressListsEnabled": False,
        "Alias": alias,
    }
    defaults = {
        "dn": dn, "dn_norm": normalize_dn(dn), "ou_norm": normalize_dn(ou), "upn": smtp, "display_name": name,
        "primary_smtp": smtp, "recipient_type_details": "UserMailbox", "is_dir_synced": True,
        "authority": Authority.ON_PREM, "in_exo": True, "in_ad": True, "exo_values": dict(values),
        "ad_values": dict(values), "exo_when_changed": timezone.now() - dt.timedelta(days=3),
    }  # fmt: skip
    defaults.update(fields)
    mailbox = Mailbox.objects.create(**defaults)
    for index, address in enumerate([smtp, *aliases]):
        MailboxAddress.objects.create(mailbox=mailbox, prefix="smtp", address=address, is_primary=index == 0)
    return mailbox


def events(action: str, obj=None) -> list[AuditEvent]:
    found = AuditEvent.objects.filter(action=action).order_by("id")
    if obj is not None:
        found = found.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))
    return list(found)


def last_event(action: str, obj=None) -> AuditEvent:
    found = events(action, obj)
    assert found, f"no audit event {action}"
    return found[-1]


def cast(make_user) -> dict:
    """The people of the wave tests: operators (tenant-wide and Sales-only), approvers (tenant-wide and Sales-only),
    a help desk user. Each test module turns it into its ``people`` fixture."""
    return {
        "op": make_user("olga", Role.WAVE_OPERATOR),
        "op2": make_user("oscar", Role.WAVE_OPERATOR),
        "sales_op": make_user("sally", Role.WAVE_OPERATOR, scopes=(SALES,)),
        "approver": make_user("anna", Role.APPROVER),
        "approver2": make_user("arno", Role.APPROVER),
        "sales_approver": make_user("sam", Role.APPROVER, scopes=(SALES,)),
        "helpdesk": make_user("hugo", Role.HELPDESK),
    }


def page_cast(make_user) -> dict:
    """The cast of the page tests: everyone in ``cast`` plus an auditor and an admin, who may read but not act."""
    return {**cast(make_user), "auditor": make_user("audrey", Role.AUDITOR), "admin": make_user("adam", Role.ADMIN)}


def signed_in(client, user):
    client.force_login(user)
    return client


def page_text(response) -> str:
    return response.content.decode()


def new_wave(actor, *mailboxes, direction=WaveDirection.TO_CLOUD, name="Pilot 1", **options):
    """A draft wave holding ``mailboxes`` (created and filled by ``actor``)."""
    from soa.services.wave_members import wave_add_members
    from soa.services.waves import wave_create

    wave = wave_create(actor=actor, name=name, direction=direction, **options)
    if mailboxes:
        wave_add_members(actor=actor, wave_id=wave.pk, mailbox_ids=[m.pk for m in mailboxes])
    wave.refresh_from_db()
    return wave


def movable(count: int) -> list[Mailbox]:
    """The first ``count`` mailboxes (by UPN) an imported tenant could move to the cloud."""
    found = list(Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True).order_by("upn")[:count])
    assert len(found) == count, f"the seed has only {len(found)} mailboxes to move"
    return found


def started_wave(people, mailboxes, **options):
    """A wave of ``mailboxes`` built, submitted, approved by someone else and started (its first batch queued)."""
    from soa.services.approvals import wave_approve
    from soa.services.wave_run import wave_start
    from soa.services.waves import wave_submit

    wave = new_wave(people["op"], *mailboxes, **options)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    return wave_start(actor=people["op2"], wave_id=wave.pk)


def submitted_wave(actor, *mailboxes, **options):
    from soa.services.waves import wave_submit

    wave = new_wave(actor, *mailboxes, **options)
    return wave_submit(actor=actor, wave_id=wave.pk)


def work() -> None:
    """Run the real RQ worker until the queue is empty; no job may fail."""
    queue = django_rq.get_queue(wave_jobs.QUEUE)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    failed = queue.failed_job_registry
    assert failed.count == 0, [queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]


def set_mailbox_calls(exchange) -> int:
    return exchange.counters()["by_cmdlet"].get("Set-Mailbox", 0)
