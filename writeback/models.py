"""Writeback's data: the runs of the inventory import (writeback tasks join them later)."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class InventoryRun(models.Model):
    """One import of the tenant's mailboxes from Exchange Online and Active Directory.

    The row is the truth about the run (Redis only delivers the job): its counters are updated after every
    page, which is what the progress partial shows and the run's heartbeat; a run whose heartbeat stopped (a dead
    worker) is failed by the sweep (writeback.jobs.lifecycle).
    """

    class Mode(models.TextChoices):
        FULL = "FULL", "Full"
        INCREMENTAL = "INCREMENTAL", "Changes since the last run"

    class State(models.TextChoices):
        QUEUED = "QUEUED", "Queued"
        RUNNING = "RUNNING", "Running"
        DONE = "DONE", "Done"
        FAILED = "FAILED", "Failed"

    OPEN_STATES = (State.QUEUED, State.RUNNING)

    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.FULL)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="last sign of life of a running import (the sweep fails it when too old)"
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    job_id = models.CharField(max_length=64, blank=True)
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
    exo_high_water = models.DateTimeField(null=True, blank=True, help_text="newest WhenChangedUTC seen")
    ad_high_water = models.CharField(max_length=128, blank=True, help_text="directory change mark before the read")
    # A change mark is a number on one domain controller: it is only trusted on the server that issued it.
    ad_server = models.CharField(max_length=1024, blank=True, help_text="directory server the change mark is from")
    ad_full_reason = models.CharField(
        max_length=512, blank=True, help_text="why this incremental run read the whole directory"
    )
    ad_ous_changed = models.PositiveIntegerField(default=0, help_text="OUs renamed, moved or changed since the mark")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # At most one open run: two imports writing the same rows would only fight.
            models.UniqueConstraint(
                fields=["state"], condition=models.Q(state__in=["QUEUED", "RUNNING"]), name="one_open_inventory_run"
            ),
        ]

    def __str__(self) -> str:
        return f"Inventory run #{self.pk} ({self.get_mode_display()}, {self.get_state_display()})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

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
