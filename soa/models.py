"""The domain's data: mailboxes as both Exchange Online and Active Directory describe them, the pilot waves
that move their authority (members, approvals, the registry of on-prem applications that read AD), and help
desk's change requests with what their validation reads (accepted domains, recently removed addresses)."""

from django.conf import settings
from django.db import models
from django.db.models import F
from django.db.models.functions import Lower, Upper
from django.utils import timezone

from soa.choices import (
    BATCH_OPEN_STATES,
    CHANGE_OPEN_STATES,
    CHANGE_READY_STATES,
    TENANT_DEFAULT_OPEN_STATES,
    TENANT_DEFAULT_TRANSITIONS,
    WAVE_OPEN_STATES,
    WEAK_PAIRINGS,
    Authority,
    BatchState,
    ChangeRoute,
    ChangeState,
    Decision,
    MemberState,
    Pairing,
    TenantDefaultState,
    WaveDirection,
    WaveState,
)


class Mailbox(models.Model):
    """One directory-synced recipient, known to Exchange Online, Active Directory or (normally) both.

    ``exo_values`` and ``ad_values`` hold the mapped Exchange attributes as last read from each side, keyed by
    their Exchange Online property name (soa.attributes); ``drift`` lists the names whose values differ.
    """

    exo_object_id = models.UUIDField(null=True, blank=True, unique=True, help_text="EXO ExternalDirectoryObjectId")
    ad_guid = models.UUIDField(null=True, blank=True, unique=True, help_text="AD objectGUID")
    # Entra's sourceAnchor as Graph's onPremisesImmutableId shows it (base64 of the configured AD anchor attribute).
    source_anchor = models.CharField(max_length=64, blank=True, db_index=True)
    pairing = models.CharField(
        max_length=16, choices=Pairing.choices, blank=True, default=Pairing.NONE,
        help_text="how the AD user and the Exchange Online object were found to be one recipient",
    )  # fmt: skip
    dn = models.CharField(max_length=1024, blank=True)
    # Lower-case canonical DN (portal.dn.normalize_dn): what OU scopes match against.
    dn_norm = models.CharField(max_length=1024, blank=True, db_index=True)
    ou_norm = models.CharField(max_length=1024, blank=True, db_index=True, help_text="normalised DN of the parent OU")
    upn = models.CharField(max_length=320, db_index=True)
    display_name = models.CharField(max_length=256, blank=True)
    # display_name in lower case: a prefix search on it is an index range scan on PostgreSQL and SQLite alike.
    search_name = models.CharField(max_length=256, blank=True)
    department = models.CharField(max_length=256, blank=True)
    primary_smtp = models.CharField(max_length=320, blank=True, db_index=True)
    recipient_type_details = models.CharField(max_length=64, blank=True, db_index=True)
    is_dir_synced = models.BooleanField(default=True)
    authority = models.CharField(max_length=16, choices=Authority.choices, default=Authority.ON_PREM, db_index=True)
    exo_values = models.JSONField(default=dict, blank=True)
    ad_values = models.JSONField(default=dict, blank=True)
    drift = models.JSONField(default=list, blank=True)
    has_drift = models.BooleanField(default=False, db_index=True)
    in_exo = models.BooleanField(default=False, help_text="found in Exchange Online at the last read")
    in_ad = models.BooleanField(default=False, help_text="found in Active Directory at the last read")
    exo_when_changed = models.DateTimeField(null=True, blank=True)
    ad_change_mark = models.CharField(max_length=64, blank=True, help_text="AD change stamp (uSNChanged / entryCSN)")
    # When the AD object was created (createTimestamp, AD's whenCreated): recipients still being created on-premises
    # keep the tenant default (exchange-facts §1.9) from being switched on.
    ad_when_created = models.DateTimeField(null=True, blank=True, db_index=True)
    exo_read_at = models.DateTimeField(null=True, blank=True)
    ad_read_at = models.DateTimeField(null=True, blank=True)
    # The inventory run that last saw the mailbox on each side: a full run that did not is told it disappeared.
    exo_seen_run = models.PositiveIntegerField(null=True, blank=True)
    ad_seen_run = models.PositiveIntegerField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "mailboxes"
        ordering = ["display_name", "id"]
        indexes = [
            models.Index(fields=["display_name", "id"], name="soa_mailbox_name_id_idx"),
            # upn's prefix search is served by the index db_index gives it (with varchar_pattern_ops on PostgreSQL,
            # "soa_mailbox_upn_..._like"); a second one cost every write its upkeep (migration 0016).
            models.Index(fields=["search_name"], name="soa_mailbox_name_prefix_idx", opclasses=["varchar_pattern_ops"]),
            # The list sorted by department (keyset pages), and its department filter (any letter case) under any
            # sort: sorted by department too, the filter's rows come out of this one in the page's order.
            models.Index(fields=["department", "id"], name="soa_mailbox_dept_id_idx"),
            models.Index(Upper("department"), F("department"), F("id"), name="soa_mailbox_dept_ci_idx"),
        ]

    def __str__(self) -> str:
        return self.upn

    @property
    def weakly_paired(self) -> bool:
        return self.pairing in WEAK_PAIRINGS


class MailboxAddress(models.Model):
    """One proxy address of a mailbox's Exchange Online EmailAddresses, normalised for lookups.

    "Find by any alias" and "is this address already used in the tenant" are index lookups on ``address``.
    """

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="addresses")
    prefix = models.CharField(max_length=16, help_text="address type, lower case: smtp, x500, sip...")
    address = models.CharField(max_length=1123, help_text="the address without its type, lower case")
    is_primary = models.BooleanField(default=False)

    class Meta:
        # varchar_pattern_ops lets PostgreSQL answer prefix searches (LIKE 'abc%') from the index; SQLite ignores it.
        indexes = [models.Index(fields=["address"], name="soa_address_address_idx", opclasses=["varchar_pattern_ops"])]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "prefix", "address"], name="soa_address_unique_per_mailbox")
        ]

    def __str__(self) -> str:
        return f"{self.prefix.upper() if self.is_primary else self.prefix}:{self.address}"


class MailboxNameWord(models.Model):
    """The display name from one of its words on, after the first (``"archer"`` and ``"ann archer"`` for "Mary Ann
    Archer"), lower case: a prefix search on it finds a mailbox by any word of its name, as ``Mailbox.search_name``
    does by its first. Kept by soa.name_words wherever ``search_name`` is written."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="name_words")
    suffix = models.CharField(max_length=256)

    class Meta:
        indexes = [models.Index(fields=["suffix"], name="soa_name_word_prefix_idx", opclasses=["varchar_pattern_ops"])]
        constraints = [models.UniqueConstraint(fields=["mailbox", "suffix"], name="soa_name_word_unique")]

    def __str__(self) -> str:
        return self.suffix


# Guards on a wave's throttle: a batch larger than this or a rate above this is a typo, not a plan.
WAVE_MAX_BATCH_SIZE = 1000
WAVE_MAX_RATE = 100.0
# More distinct approvers than this is a typo too (and past the column's range, an overflow).
WAVE_MAX_APPROVALS = 20


class PilotWave(models.Model):
    """A group of mailboxes whose Exchange-attribute authority moves together, after pre-flight and approval.

    ``selection`` records how the members were chosen (one entry per add/remove step). ``preflight_report`` is
    the wave-level part of the pre-flight (parameters, summary, wave findings, the warning codes an approver
    must acknowledge), frozen by ``wave_submit``; each member's own findings live on its WaveMember.
    ``submission_round`` counts submissions: approvals of an earlier round (before a withdrawal) never count.
    """

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    direction = models.CharField(max_length=16, choices=WaveDirection.choices)
    state = models.CharField(max_length=32, choices=WaveState.choices, default=WaveState.DRAFT, db_index=True)
    selection = models.JSONField(default=list, blank=True, help_text="how the members were chosen, step by step")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    submission_round = models.PositiveIntegerField(default=0)
    required_approvals = models.PositiveSmallIntegerField(default=1, help_text="distinct approvers needed")
    approval_expires_at = models.DateTimeField(null=True, blank=True)
    window_start = models.DateTimeField(null=True, blank=True, help_text="run no earlier than this")
    window_end = models.DateTimeField(null=True, blank=True, help_text="run no later than this")
    batch_size = models.PositiveIntegerField(default=50)
    max_rate = models.FloatField(default=5.0, help_text="flips per second at most")
    preflight_report = models.JSONField(default=dict, blank=True)
    rollback_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="rollbacks",
        help_text="the completed wave this one reverses",
    )  # fmt: skip
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Two open waves with the same name would be confused in every list and email.
            models.UniqueConstraint(
                Lower("name"), condition=models.Q(state__in=sorted(WAVE_OPEN_STATES)), name="soa_wave_open_name_unique"
            ),
            models.CheckConstraint(condition=models.Q(required_approvals__gte=1), name="soa_wave_approvals_min_1"),
            models.CheckConstraint(
                condition=models.Q(batch_size__gte=1, batch_size__lte=WAVE_MAX_BATCH_SIZE),
                name="soa_wave_batch_size_range",
            ),
            models.CheckConstraint(
                condition=models.Q(max_rate__gt=0, max_rate__lte=WAVE_MAX_RATE), name="soa_wave_rate_range"
            ),
            models.CheckConstraint(
                condition=models.Q(window_start__isnull=True)
                | models.Q(window_end__isnull=True)
                | models.Q(window_end__gt=models.F("window_start")),
                name="soa_wave_window_order",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_open(self) -> bool:
        return self.state in WAVE_OPEN_STATES

    def approval_expired(self, now=None) -> bool:
        """Whether a submitted wave's approval window has closed."""
        return self.approval_expires_at is not None and (now or timezone.now()) >= self.approval_expires_at

    @property
    def warnings_to_acknowledge(self) -> list[str]:
        """Warning codes of the frozen pre-flight report that an approver must acknowledge."""
        return list(self.preflight_report.get("acknowledge", []))

    def audit_snapshot(self) -> dict:
        """What the audit log records of the wave before and after a change."""
        counts = self.members.aggregate(
            total=models.Count("id"), excluded=models.Count("id", filter=models.Q(excluded=True))
        )
        approvals = self.approvals.filter(round=self.submission_round, decision=Decision.APPROVE).count()
        return {
            "name": self.name,
            "direction": self.direction,
            "state": self.state,
            "members": counts["total"],
            "excluded": counts["excluded"],
            "required_approvals": self.required_approvals,
            "approvals": approvals if self.submission_round else 0,
            "submission_round": self.submission_round,
            "submitted_by": self.submitted_by.get_username() if self.submitted_by_id else None,
            "submitted_at": self.submitted_at,
            "approval_expires_at": self.approval_expires_at,
            "window": [self.window_start, self.window_end],
            "batch_size": self.batch_size,
            "max_rate": self.max_rate,
            "preflight_summary": self.preflight_report.get("summary"),
            "rollback_of": self.rollback_of_id,
            "version": self.version,
        }


class WaveMember(models.Model):
    """One mailbox in one wave, and the record of its flip.

    This row is also the authority change itself (DESIGN's AuthorityChange): its state, attempts, last error and
    times are the flip's, and ``snapshot`` is the pre-change picture of both sides' Exchange attributes taken at
    submission, which a rollback or an investigation starts from. A member whose pre-flight has a blocking
    finding is ``excluded`` (and SKIPPED) at submission: it stays listed with its reasons but is never flipped.
    """

    wave = models.ForeignKey(PilotWave, on_delete=models.CASCADE, related_name="members")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="wave_memberships")
    state = models.CharField(max_length=16, choices=MemberState.choices, default=MemberState.PENDING)
    excluded = models.BooleanField(default=False)
    preflight = models.JSONField(default=dict, blank=True, help_text='{"blocking": [...], "warnings": [...]}')
    snapshot = models.JSONField(default=dict, blank=True, help_text="both sides' values at submission")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # While RUNNING, the batch that claimed the member says it is alive every WAVE_HEARTBEAT_SECONDS; a member whose
    # heartbeat is older than WAVE_STALE_SECONDS belongs to a dead worker (writeback.jobs.waves.wave_watch).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A PENDING member is not claimed before this time: Exchange asked to be called back later (Retry-After),
    # or the mailbox answered 404 and replication lag gets time to pass (writeback.wave_jobs).
    not_before = models.DateTimeField(null=True, blank=True)
    # When Exchange first answered 404 for this member's mailbox, since which the runner keeps retrying for
    # EXO_NOT_FOUND_RETRY_SECONDS; cleared when it is found or the member fails.
    not_found_since = models.DateTimeField(null=True, blank=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["wave", "mailbox"], name="soa_wavemember_unique")]
        indexes = [models.Index(fields=["wave", "state"], name="soa_wavemember_wave_state_idx")]

    def __str__(self) -> str:
        return f"{self.mailbox_id} in wave {self.wave_id}"


class Approval(models.Model):
    """One approver's decision on one submission of a wave.

    ``acknowledged_warnings`` lists the pre-flight warning codes the approver confirmed having read.
    """

    wave = models.ForeignKey(PilotWave, on_delete=models.CASCADE, related_name="approvals")
    round = models.PositiveIntegerField(help_text="the wave's submission_round this decision answers")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = models.TextField(blank=True)
    acknowledged_warnings = models.JSONField(default=list, blank=True)
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["decided_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["wave", "round", "approver"], name="soa_approval_one_per_approver"),
            models.CheckConstraint(
                condition=~models.Q(decision=Decision.REJECT, reason=""), name="soa_approval_reject_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} of wave {self.wave_id} by {self.approver_id}"


class ConsumerApplication(models.Model):
    """An on-premises application that reads Exchange attributes from AD over LDAP.

    Pre-flight warns, for waves moving authority to the cloud, about each of its ``attributes`` (LDAP names)
    that this installation does not write back: the application would read a stale copy.
    """

    name = models.CharField(max_length=200)
    attributes = models.JSONField(default=list, help_text="LDAP attribute names the application reads")
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="soa_consumer_app_name_unique")]

    def __str__(self) -> str:
        return self.name

    def audit_snapshot(self) -> dict:
        return {"name": self.name, "attributes": list(self.attributes), "notes": self.notes}


class ChangeRequest(models.Model):
    """A help-desk edit of one mailbox: what was asked, what it makes of the mailbox, and what became of it.

    ``operations`` are the validated operations in canonical form (soa.validation); ``before`` and ``desired``
    hold the changed attributes' values (Exchange Online names) on the authoritative side before and after the
    edit; ``base_version`` is the Mailbox.version the person saw. ``route`` says which systems the apply job writes,
    from the mailbox's authority when the request was made. ``results`` holds one entry per system written
    (``exchange``, ``directory``) with what it answered. ``idempotency_key`` comes from the form, so a form
    submitted twice makes one request. ``started_at``, ``heartbeat_at`` and ``finished_at`` are the apply job's
    run fields (writeback's job lifecycle).
    """

    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="change_requests")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    operations = models.JSONField(default=list)
    before = models.JSONField(default=dict, blank=True, help_text="the changed attributes' values before the edit")
    desired = models.JSONField(default=dict, help_text="the changed attributes' values after the edit")
    base_version = models.PositiveIntegerField(help_text="the mailbox version the edit was based on")
    reason = models.TextField(blank=True)
    state = models.CharField(max_length=32, choices=ChangeState.choices, db_index=True)
    route = models.CharField(max_length=16, choices=ChangeRoute.choices)
    needs_approval = models.BooleanField(default=False)
    approval_expires_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    results = models.JSONField(default=dict, blank=True, help_text="per system: what it answered")
    error = models.TextField(blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=64, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One open request per mailbox: each is validated against the values the one before left, and the
            # apply job never has two edits of one mailbox to order.
            models.UniqueConstraint(
                fields=["mailbox"], condition=models.Q(state__in=sorted(CHANGE_OPEN_STATES)),
                name="soa_change_one_open_per_mailbox",
            ),
            models.CheckConstraint(
                condition=~models.Q(state=ChangeState.REJECTED, decision_reason=""), name="soa_change_reject_has_reason"
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"change request #{self.pk} of {self.mailbox_id}"

    @property
    def is_open(self) -> bool:
        return self.state in CHANGE_OPEN_STATES

    @property
    def ready_to_apply(self) -> bool:
        return self.state in CHANGE_READY_STATES

    def approval_expired(self, now=None) -> bool:
        """Whether a request waiting for approval has passed its approval window."""
        return self.approval_expires_at is not None and (now or timezone.now()) >= self.approval_expires_at

    def audit_snapshot(self) -> dict:
        """What the audit log records of the request before and after a change."""
        return {
            "mailbox": self.mailbox_id,
            "state": self.state,
            "route": self.route,
            "operations": list(self.operations),
            "before": dict(self.before),
            "desired": dict(self.desired),
            "base_version": self.base_version,
            "needs_approval": self.needs_approval,
            "approval_expires_at": self.approval_expires_at,
            "decided_by": self.decided_by.get_username() if self.decided_by_id else None,
            "results": dict(self.results),
            "error": self.error,
        }


class AcceptedDomain(models.Model):
    """One of the tenant's accepted domains as Get-AcceptedDomain last listed them (a cache that writeback fills).

    The whole list is replaced at once (soa.services.accepted_domains), so every row carries the same
    ``fetched_at``; validation trusts the list for ACCEPTED_DOMAINS_TTL_SECONDS after it.
    """

    domain = models.CharField(max_length=253, unique=True, help_text="lower case")
    domain_type = models.CharField(max_length=32, blank=True, help_text="Authoritative, InternalRelay...")
    is_default = models.BooleanField(default=False)
    fetched_at = models.DateTimeField()

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain


class RemovedAddress(models.Model):
    """An address taken off a mailbox by the portal, kept so that another mailbox cannot take it during the
    cool-down (ADDRESS_COOLDOWN_HOURS): mail and replies still addressed to it would reach the wrong person."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.SET_NULL, null=True, related_name="+")
    prefix = models.CharField(max_length=16, help_text="address type, lower case")
    address = models.CharField(max_length=1123, help_text="the address without its type, lower case")
    removed_at = models.DateTimeField(default=timezone.now)
    change_request = models.ForeignKey(ChangeRequest, on_delete=models.SET_NULL, null=True, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["address", "removed_at"], name="soa_removed_address_idx")]

    def __str__(self) -> str:
        return f"{self.prefix}:{self.address}"


class ChangeBatch(models.Model):
    """A bulk edit: the lines of one uploaded CSV file, each of which becomes a ChangeRequest of its own, created by a
    background job at a bounded pace (soa.services.change_batches), in file order for each mailbox.

    ``state`` moves as BATCH_TRANSITIONS allows. The counts of lines created, applied and failed are read from the
    lines and their requests (``progress``); ``heartbeat_at`` is the last step of the job that creates them."""

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    reason = models.TextField(blank=True)
    file_name = models.CharField(max_length=255, blank=True)
    line_count = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, choices=BatchState.choices, default=BatchState.QUEUED, db_index=True)
    idempotency_key = models.CharField(max_length=64, unique=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"bulk edit #{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.state in BATCH_OPEN_STATES

    def audit_snapshot(self) -> dict:
        """What the audit log records of the batch before and after a change."""
        return {
            "state": self.state,
            "file_name": self.file_name,
            "line_count": self.line_count,
            "reason": self.reason,
            "error": self.error,
        }


class ChangeBatchLine(models.Model):
    """One line of a bulk edit: the mailbox and the one operation (soa.validation's canonical form) it asks for, the
    change request made of it once its turn came, or why none could be made (``error``)."""

    batch = models.ForeignKey(ChangeBatch, on_delete=models.CASCADE, related_name="lines")
    number = models.PositiveIntegerField(help_text="the line's number in the file")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="+")
    operation = models.JSONField()
    request = models.OneToOneField(
        ChangeRequest, on_delete=models.PROTECT, null=True, blank=True, related_name="batch_line"
    )
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["batch", "number"]
        constraints = [models.UniqueConstraint(fields=["batch", "number"], name="soa_batch_line_unique")]

    def __str__(self) -> str:
        return f"line {self.number} of bulk edit #{self.batch_id}"


class ReadinessSnapshot(models.Model):
    """The decommission readiness figures of one day (soa.readiness), tenant-wide: what the page's trend draws.

    The counts the trend needs are columns; ``figures`` keeps the whole measurement as the page showed it.
    """

    day = models.DateField(unique=True)
    taken_at = models.DateTimeField(default=timezone.now)
    total = models.PositiveIntegerField(default=0)
    cloud = models.PositiveIntegerField(default=0, help_text="cloud-managed mailboxes")
    on_prem = models.PositiveIntegerField(default=0, help_text="mailboxes still mastered in AD")
    drifted = models.PositiveIntegerField(default=0, help_text="mailboxes whose two sides differed at the inventory")
    open_drift = models.PositiveIntegerField(default=0, help_text="open drift findings")
    failed_writebacks = models.PositiveIntegerField(default=0)
    figures = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"Readiness on {self.day}"


class PrerequisiteCheck(models.Model):
    """The latest result of one prerequisite check of the readiness page (soa.prerequisites), one row per check, so
    the page shows them without calling Graph, Exchange or AD. ``measured`` says in a sentence what was found,
    ``evidence`` keeps the values behind it, ``source`` where they came from; ``error`` why a source gave nothing."""

    class Status(models.TextChoices):
        MET = "met", "met"
        NOT_MET = "not_met", "not met"
        UNKNOWN = "unknown", "unknown"

    key = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
    measured = models.TextField(blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    checked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Prerequisite {self.key}: {self.get_status_display()}"


class PrerequisiteInput(models.Model):
    """What an administrator recorded for a prerequisite the portal cannot read itself: Entra Connect's version and
    where it was seen (no Microsoft API reports it), or the canary mailbox of the Exchange role check. The newest row
    of a kind is the one in force; older rows stay as the history."""

    class Kind(models.TextChoices):
        CONNECT_VERSION = "connect_version", "Entra Connect version"
        CANARY = "canary", "Canary mailbox"

    kind = models.CharField(max_length=32, choices=Kind.choices, db_index=True)
    value = models.CharField(max_length=64, blank=True, help_text="the version, for connect_version")
    seen_where = models.CharField(max_length=300, blank=True, help_text="where the administrator read it")
    mailbox = models.ForeignKey(Mailbox, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-recorded_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} recorded {self.recorded_at:%Y-%m-%d %H:%M}"


# Distinct approvers, other than the requester, that switching on the tenant default needs (four-eyes).
TENANT_DEFAULT_APPROVALS = 2


class TenantDefaultRequest(models.Model):
    """A request to switch on the tenant-wide default that makes new synced users cloud-managed (exchange-facts §1.9:
    ``Set-OrganizationConfig -ExchangeAttributesCloudManagedByDefault``), which only Microsoft Support can undo for
    the users it has affected.

    ``tenant_name`` is the tenant's name as Exchange gave it when the request was made: each approver types it.
    ``property_name`` is the Get-OrganizationConfig property read back (not confirmed by Microsoft: a setting).
    The row is also the run row of the job that makes the call (writeback.jobs.tenant_default): ``called`` says
    whether Set-OrganizationConfig was sent (False when the read before it already showed the default on),
    ``result`` what Exchange answered, ``read_back`` what Get-OrganizationConfig showed afterwards.
    """

    State = TenantDefaultState
    TRANSITIONS = TENANT_DEFAULT_TRANSITIONS

    tenant_name = models.CharField(max_length=255)
    property_name = models.CharField(max_length=128)
    reason = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(default=timezone.now)
    blockers_at_request = models.JSONField(default=list, blank=True, help_text="the blockers counted, all zero")
    state = models.CharField(max_length=16, choices=TenantDefaultState.choices, default=TenantDefaultState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    job_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    called = models.BooleanField(default=False, help_text="Set-OrganizationConfig was sent")
    result = models.TextField(blank=True)
    read_back = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One request in flight at a time: two would ask approvers to confirm the same switch twice.
            models.UniqueConstraint(
                fields=["property_name"], condition=models.Q(state__in=sorted(TENANT_DEFAULT_OPEN_STATES)),
                name="soa_tenant_default_one_open",
            ),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"Tenant default request #{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.state in TENANT_DEFAULT_OPEN_STATES

    def audit_snapshot(self) -> dict:
        return {
            "tenant_name": self.tenant_name,
            "property_name": self.property_name,
            "state": self.state,
            "requested_by": self.requested_by.get_username() if self.requested_by_id else None,
            "approvals": sorted(self.approvals.values_list("approver__username", flat=True)) if self.pk else [],
            "attempts": self.attempts,
            "called": self.called,
            "result": self.result,
            "read_back": self.read_back,
            "error": self.error,
        }


class TenantDefaultApproval(models.Model):
    """One approver's confirmation of a TenantDefaultRequest, with the tenant name they typed."""

    request = models.ForeignKey(TenantDefaultRequest, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    typed_name = models.CharField(max_length=255)
    approved_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["approved_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="soa_tenant_default_one_approval_each")
        ]

    def __str__(self) -> str:
        return f"Approval of tenant default request {self.request_id} by {self.approver_id}"


class ReadinessGroup(models.Model):
    """One (OU, recipient type, authority) group of mailboxes as a readiness snapshot counted it: the row of
    soa.readiness.group_counts with the group's open drift findings and failed writebacks, in ``counts``.

    An OU-scoped view of the page sums the groups of its subtrees instead of scanning the mailboxes. Only the newest
    snapshot keeps its groups (the trend needs none).
    """

    snapshot = models.ForeignKey(ReadinessSnapshot, on_delete=models.CASCADE, related_name="groups")
    ou_norm = models.CharField(max_length=1024, blank=True, help_text="normalised DN of the mailboxes' parent OU")
    counts = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["snapshot", "ou_norm"], name="soa_readiness_group_ou_idx")]

    def __str__(self) -> str:
        return f"{self.ou_norm or '(no OU)'} in {self.snapshot}"
