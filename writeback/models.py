"""Writeback's data: the runs of the inventory import, the writeback tasks that write mailboxes' Exchange attributes
into AD, and the drift those tasks find there."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class TenantReadRun(models.Model):
    """What every run that reads both sides of the tenant carries (abstract): the job lifecycle's fields
    (writeback.jobs.lifecycle: state, claim and heartbeat times, the RQ job, the error) and the marks an incremental
    read starts from (Exchange's newest WhenChangedUTC; AD's change mark, trusted only on the server that issued it).
    """

    class State(models.TextChoices):
        QUEUED = "QUEUED", "Queued"
        RUNNING = "RUNNING", "Running"
        DONE = "DONE", "Done"
        FAILED = "FAILED", "Failed"

    OPEN_STATES = (State.QUEUED, State.RUNNING)

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="last sign of life of a running run (the sweep fails it when too old)"
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    job_id = models.CharField(max_length=64, blank=True)
    exo_high_water = models.DateTimeField(null=True, blank=True, help_text="newest WhenChangedUTC seen")
    ad_high_water = models.CharField(max_length=128, blank=True, help_text="directory change mark before the read")
    ad_server = models.CharField(max_length=1024, blank=True, help_text="directory server the change mark is from")
    ad_full_reason = models.CharField(
        max_length=512, blank=True, help_text="why this incremental run read the whole directory"
    )
    ad_ous_changed = models.PositiveIntegerField(default=0, help_text="OUs renamed, moved or changed since the mark")
    error = models.TextField(blank=True)

    class Meta:
        abstract = True
        ordering = ["-id"]

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES


class InventoryRun(TenantReadRun):
    """One import of the tenant's mailboxes from Exchange Online and Active Directory.

    The row is the truth about the run (Redis only delivers the job): its counters are updated after every
    page, which is what the progress partial shows and the run's heartbeat; a run whose heartbeat stopped (a dead
    worker) is failed by the sweep (writeback.jobs.lifecycle).
    """

    class Mode(models.TextChoices):
        FULL = "FULL", "Full"
        INCREMENTAL = "INCREMENTAL", "Changes since the last run"

    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.FULL)
    phase = models.CharField(max_length=32, blank=True, help_text="what the run is reading now")
    expected = models.PositiveIntegerField(default=0, help_text="objects expected per side (for the ETA)")
    ad_read = models.PositiveIntegerField(default=0)
    exo_read = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    skipped_not_synced = models.PositiveIntegerField(default=0)
    exo_only = models.PositiveIntegerField(default=0)
    ad_only = models.PositiveIntegerField(default=0)
    drifted = models.PositiveIntegerField(default=0)
    graph_read = models.PositiveIntegerField(default=0, help_text="Entra users read through Graph")
    graph_paired = models.PositiveIntegerField(default=0, help_text="AD users paired (or re-paired) through Graph")
    pairings = models.JSONField(default=dict, blank=True, help_text="paired mailboxes by pairing method, at the end")
    exchange_read_at = models.DateTimeField(
        null=True, blank=True, help_text="when a spread import's Exchange read ended (all its objects shared)"
    )

    class Meta(TenantReadRun.Meta):
        constraints = [
            # At most one open run: two imports writing the same rows would only fight.
            models.UniqueConstraint(
                fields=["state"], condition=models.Q(state__in=["QUEUED", "RUNNING"]), name="one_open_inventory_run"
            ),
        ]

    def __str__(self) -> str:
        return f"Inventory run #{self.pk} ({self.get_mode_display()}, {self.get_state_display()})"

    @property
    def processed(self) -> int:
        return self.ad_read + self.exo_read

    @property
    def rate(self) -> float | None:
        """Objects read per second so far."""
        if not self.started_at:
            return None
        elapsed = ((self.finished_at or timezone.now()) - self.started_at).total_seconds()
        return self.processed / elapsed if elapsed > 0 else None

    @property
    def eta_seconds(self) -> int | None:
        rate = self.rate
        remaining = 2 * self.expected - self.processed
        if self.state != self.State.RUNNING or not rate or remaining <= 0:
            return None
        return int(remaining / rate)

    def audit_snapshot(self) -> dict:
        fields = ("mode", "state", "ad_read", "exo_read", "created", "changed", "unchanged", "skipped_not_synced")
        return {name: getattr(self, name) for name in (*fields, "exo_only", "ad_only", "drifted", "error")}


class InventoryShard(models.Model):
    """One OU subtree (or one container's own users) of a full import spread over several workers
    (writeback.inventory_shards). Any worker taking part claims a QUEUED shard, reads its users and merges them; a
    RUNNING shard whose heartbeat stopped (its worker died) is queued again by the run's coordinator."""

    class Scope(models.TextChoices):
        SUBTREE = "subtree", "Subtree"
        LEVEL = "level", "Its own users"

    State = TenantReadRun.State  # a part's lifecycle is its run's

    run = models.ForeignKey(InventoryRun, on_delete=models.CASCADE, related_name="shards")
    base_dn = models.CharField(max_length=2048)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    worker = models.CharField(max_length=255, blank=True, help_text="host and process that claimed it last")
    claims = models.PositiveIntegerField(default=0, help_text="times claimed (more than one: a worker died)")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    ad_read = models.PositiveIntegerField(default=0)
    exo_newest = models.DateTimeField(null=True, blank=True, help_text="newest WhenChangedUTC its users took")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["run", "state"], name="inventory_shard_run_state")]

    def __str__(self) -> str:
        return f"{self.get_scope_display()} of {self.base_dn}"


class InventoryObject(models.Model):
    """One Get-Mailbox object of a spread import, read by the coordinator and shared with every worker through the
    database (writeback.inventory_shards.SharedSpool): a worker's directory pass takes the objects its users name,
    the coordinator's Exchange pass the rest. Kept as JSON, never pickled: workers only ever parse it. Deleted when
    the run ends."""

    run = models.ForeignKey(InventoryRun, on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveIntegerField(help_text="order read")
    key = models.BinaryField(max_length=16, null=True, help_text="ExternalDirectoryObjectId's 16 bytes")
    data = models.BinaryField()
    taken = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="inventory_object_run_seq")]
        indexes = [models.Index(fields=["run", "key"], name="inventory_object_run_key")]

    def __str__(self) -> str:
        return f"Exchange object {self.seq} of inventory run #{self.run_id}"


class WritebackTask(models.Model):
    """One pending write of a mailbox's written-back Exchange attributes into its AD user (DESIGN §4, §5 flow 5).

    ``desired`` holds the values AD should hold, keyed by Exchange Online property name as ``Mailbox.exo_values``
    (the cloud's values: the cloud holds authority); the job writes those of them this installation writes back
    (soa.attributes.writeback_attributes), never identity attributes and never the MOERA. It records what it found
    (``observed``), the LDAP operations it sent (``applied``, ``{}`` when AD already agreed) and what it read back
    (``read_back``), all by LDAP name.

    The row is the truth (Redis only delivers the job). States follow ``TRANSITIONS``: a queued task is claimed
    (RUNNING, one attempt more) and ends DONE or FAILED; a retryable directory error or a dead worker returns it to
    QUEUED for a later attempt (writeback.jobs.lifecycle.WRITEBACK_RETRY); a newer request for the same mailbox
    makes a queued one SUPERSEDED; a person may queue a FAILED one again. At most one task per mailbox is queued
    and at most one running (the constraints): a request made while one runs queues behind it and is started
    when it ends.
    """

    class State(models.TextChoices):
        QUEUED = "QUEUED", "Queued"
        RUNNING = "RUNNING", "Running"
        DONE = "DONE", "Done"
        FAILED = "FAILED", "Failed"
        SUPERSEDED = "SUPERSEDED", "Superseded"

    OPEN_STATES = (State.QUEUED, State.RUNNING)
    # The lifecycle's run-row table (writeback.jobs.lifecycle), with the moves a task makes beyond an import's.
    TRANSITIONS: dict[str, frozenset[str]] = {
        State.QUEUED: frozenset({State.RUNNING, State.FAILED, State.SUPERSEDED}),
        # Back to QUEUED: released after a retryable error, or returned by the sweep; SUPERSEDED: returned by the
        # sweep while a newer request waits, which carries the newer values.
        State.RUNNING: frozenset({State.DONE, State.FAILED, State.QUEUED, State.SUPERSEDED}),
        State.FAILED: frozenset({State.QUEUED}),  # a person retries it
        State.DONE: frozenset(),
        State.SUPERSEDED: frozenset(),
    }

    mailbox = models.ForeignKey("soa.Mailbox", on_delete=models.PROTECT, related_name="writeback_tasks")
    desired = models.JSONField(default=dict, help_text="values AD should hold, by Exchange Online property name")
    observed = models.JSONField(default=dict, blank=True, help_text="AD's values before the write, by LDAP name")
    applied = models.JSONField(default=dict, blank=True, help_text="LDAP modify operations sent, by LDAP name")
    read_back = models.JSONField(default=dict, blank=True, help_text="AD's values read back after the write")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    source = models.CharField(
        max_length=64, help_text="what asked for it: change_request:<id>, drift_repair, manual..."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    correlation_id = models.CharField(max_length=64, blank=True, help_text="of the request that asked for it")
    superseded_by = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    attempts = models.PositiveIntegerField(default=0, help_text="claims so far")
    requested_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(default=timezone.now, help_text="when its job was last queued")
    retry_at = models.DateTimeField(null=True, blank=True, help_text="when a released task is tried again")
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    job_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A newer desire replaces a queued one (writeback_task_request), so one queued task per mailbox...
            models.UniqueConstraint(
                fields=["mailbox"], condition=models.Q(state="QUEUED"), name="one_queued_writeback_per_mailbox"
            ),
            # ...and one running: two writers of one entry would plan against each other's half-done work.
            models.UniqueConstraint(
                fields=["mailbox"], condition=models.Q(state="RUNNING"), name="one_running_writeback_per_mailbox"
            ),
        ]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="writeback_task_state_beat_idx")]

    def __str__(self) -> str:
        return f"Writeback task #{self.pk} ({self.get_state_display()})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

    def audit_snapshot(self) -> dict:
        fields = ("mailbox_id", "state", "source", "attempts", "desired", "applied", "error")
        snapshot = {name: getattr(self, name) for name in fields}
        snapshot["retry_at"] = self.retry_at.isoformat() if self.retry_at else None
        return snapshot

    def state_snapshot(self) -> dict:
        """The audit snapshot without the values (``desired``, ``applied``): for events that move the task without
        changing them (its claim, the "before" of its completion), where the request's event already holds them."""
        snapshot = self.audit_snapshot()
        del snapshot["desired"], snapshot["applied"]
        return snapshot


class DriftFinding(models.Model):
    """A value found in AD that the portal did not write and that differs both from what the portal last knew of
    AD and from the cloud: someone edited AD directly. The cloud holds authority, so the writeback that found it
    then writes the cloud value; ``resolved_at`` and ``resolution`` say when and how the finding was closed."""

    class Resolution(models.TextChoices):
        OPEN = "", "Open"
        OVERWRITTEN = "OVERWRITTEN", "Overwritten with the cloud value"
        AGREES = "AGREES", "Exchange and AD agree again"

    mailbox = models.ForeignKey("soa.Mailbox", on_delete=models.PROTECT, related_name="drift_findings")
    attribute = models.CharField(max_length=64, help_text="Exchange Online property name")
    ad_value = models.JSONField(null=True, blank=True, help_text="what AD held")
    last_known_value = models.JSONField(null=True, blank=True, help_text="what the portal last knew AD to hold")
    cloud_value = models.JSONField(null=True, blank=True, help_text="the cloud's value, which the writeback wrote")
    task = models.ForeignKey(
        WritebackTask, on_delete=models.PROTECT, null=True, blank=True, related_name="drift_findings",
        help_text="the writeback that found it",
    )  # fmt: skip
    scan = models.ForeignKey(
        "DriftScan", on_delete=models.PROTECT, null=True, blank=True, related_name="findings",
        help_text="the drift scan that found it",
    )  # fmt: skip
    repair_task = models.ForeignKey(
        WritebackTask, on_delete=models.PROTECT, null=True, blank=True, related_name="repairs",
        help_text="the writeback queued to repair it (the drift page, or DRIFT_AUTO_REPAIR)",
    )  # fmt: skip
    found_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True, default=Resolution.OPEN)

    class Meta:
        ordering = ["-found_at", "-id"]
        indexes = [models.Index(fields=["mailbox", "attribute", "resolved_at"], name="writeback_drift_open_idx")]

    def __str__(self) -> str:
        return f"Drift in {self.attribute} of mailbox #{self.mailbox_id}"

    def audit_snapshot(self) -> dict:
        fields = ("mailbox_id", "attribute", "ad_value", "last_known_value", "cloud_value", "task_id", "resolution")
        return {name: getattr(self, name) for name in (*fields, "scan_id", "repair_task_id")}

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class DriftScan(TenantReadRun):
    """One comparison of the written-back attributes of cloud-managed mailboxes between Exchange Online and AD
    (writeback.jobs.drift). A full scan reads both sides whole; an incremental one reads what changed since the last
    completed scan (Exchange's ``WhenChangedUTC``, AD's change mark from the same server, as the inventory's
    incremental import does) and compares those mailboxes. The row is the truth about the run, on the job lifecycle
    (RUN_TRANSITIONS); its counters are its heartbeat."""

    class Mode(models.TextChoices):
        FULL = "FULL", "Full"
        INCREMENTAL = "INCREMENTAL", "Changes since the last scan"

    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.FULL)
    ad_read = models.PositiveIntegerField(default=0, help_text="AD users read")
    exo_read = models.PositiveIntegerField(default=0, help_text="Get-Mailbox objects read")
    compared = models.PositiveIntegerField(default=0, help_text="cloud-managed mailboxes compared")
    found = models.PositiveIntegerField(default=0, help_text="new drift findings recorded")
    cleared = models.PositiveIntegerField(default=0, help_text="open findings closed: the two sides agree again")

    class Meta(TenantReadRun.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["state"], condition=models.Q(state__in=["QUEUED", "RUNNING"]), name="one_open_drift_scan"
            ),
        ]

    def __str__(self) -> str:
        return f"Drift scan #{self.pk} ({self.get_mode_display()}, {self.get_state_display()})"

    def audit_snapshot(self) -> dict:
        fields = ("mode", "state", "ad_read", "exo_read", "compared", "found", "cleared", "ad_full_reason", "error")
        return {name: getattr(self, name) for name in fields}
