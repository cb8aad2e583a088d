"""The portal shell's data: users, role assignments with their OU scopes, and the audit log."""

from django.conf import settings
from django.contrib.auth.models import AbstractUser, Group
from django.db import models
from django.db.models import Q


class User(AbstractUser):
    """A person who signs in to the portal. What they may do comes from their RoleAssignments."""

    class Meta:
        db_table = "portal_user"


class Capability(models.Model):
    """Holder of the portal's action permissions; it has no table.

    Django permissions belong to a model. The portal's actions (edit a mailbox, approve a wave...) are not
    tied to one table, so they hang off this unmanaged model and the roles' groups carry them.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("mailbox_view", "Search and read mailboxes"),
            ("mailbox_edit", "Edit the Exchange attributes of mailboxes"),
            ("bulk_edit", "Edit the Exchange attributes of mailboxes in bulk, from a CSV file"),
            ("wave_view", "Read pilot waves and their pre-flight reports"),
            ("wave_build", "Build, submit and request rollback of pilot waves"),
            ("wave_run", "Run, pause, resume and cancel approved pilot waves"),
            ("wave_approve", "Approve or reject submitted pilot waves and sensitive changes"),
            ("audit_view", "Browse the change history"),
            ("audit_export", "Export the change history"),
            ("audit_verify", "Verify the audit hash chain"),
            ("portal_configure", "Configure connections, attribute policy, roles and scopes"),
            ("jobs_view", "Open the background job dashboard"),
        ]

    def __str__(self) -> str:
        return "portal capability"


class RoleAssignment(models.Model):
    """One role held by one user, optionally limited to OU subtrees of the directory.

    ``tenant_wide`` must be set explicitly for a role to reach every object: an assignment with no scopes
    and no tenant-wide flag grants nothing, so a forgotten scope fails closed. Actions on the portal itself
    (audit, configuration, jobs) need a tenant-wide assignment (portal.roles.TENANT_ACTIONS).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_assignments")
    role = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="assignments")
    tenant_wide = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Held because of the user's Entra ID groups (portal.group_roles): made, changed and taken away at each Entra
    # sign-in to match the group mappings. An administrator's own grant (False) is left alone by sign-in.
    from_groups = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "role"], name="portal_roleassignment_unique_role")]

    def __str__(self) -> str:
        return f"{self.user} as {self.role.name}"


class RoleScope(models.Model):
    """An OU subtree (by DN) that limits a role assignment. ``base_dn_norm`` is the normalised DN."""

    assignment = models.ForeignKey(RoleAssignment, on_delete=models.CASCADE, related_name="scopes")
    base_dn = models.CharField(max_length=1024)
    base_dn_norm = models.CharField(max_length=1024)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["assignment", "base_dn_norm"], name="portal_rolescope_unique_dn"),
        ]

    def __str__(self) -> str:
        return self.base_dn


class AuditEvent(models.Model):
    """One entry of the append-only change history, hash-chained to the entry before it.

    Written only by ``portal.audit.audit_record()``, in the same transaction as the change it records. The
    database refuses UPDATE and DELETE on this table (triggers from migration 0002); ``audit_verify``
    recomputes the chain to detect edits made around the triggers.
    """

    occurred_at = models.DateTimeField(db_index=True)
    # PROTECT: a user with history is deactivated, never deleted (SET_NULL would be an UPDATE, refused anyway).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="audit_events"
    )
    actor_name = models.CharField(max_length=255)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=255, blank=True, db_index=True)
    object_repr = models.CharField(max_length=500, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id"], name="portal_audit_object_idx"),
            # The list's order, newest first, and its keyset cursor: any page of any time range starts at an index.
            models.Index(fields=["occurred_at", "id"], name="portal_audit_time_idx"),
            # The few names recorded for the system and jobs, read by a loose index scan (portal.selectors).
            models.Index(fields=["actor_name"], name="portal_audit_unnamed_actor_idx", condition=Q(actor__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} by {self.actor_name}"


class SignInThrottle(models.Model):
    """Recent failed sign-ins counted against one user name or one client address (portal.signin).

    Counted per name whether or not an account has it, so a lock-out says nothing about which accounts exist.
    Never holds a password: only the name typed, the address, counts and times.
    """

    class Kind(models.TextChoices):
        USERNAME = "username", "User name"
        ADDRESS = "address", "Client address"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    key = models.CharField(max_length=255)
    failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField()
    last_failure_at = models.DateTimeField(db_index=True)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "key"], name="portal_signinthrottle_unique_key")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.key}"


class EntraAccount(models.Model):
    """The Entra ID identity behind a portal user who signs in through Entra (portal.entra_signin).

    Users are matched on the immutable object id, never on the name, so a renamed person stays the same user and
    a local account that happens to carry the same name is never taken over. ``groups`` are the group object ids
    read at the last sign-in (so an administrator cannot change the mapping of a group they belong to).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="entra_account")
    object_id = models.CharField(max_length=64, unique=True)
    tenant_id = models.CharField(max_length=64)
    groups = models.JSONField(default=list, blank=True)
    last_signin_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.object_id})"


class GroupRoleMapping(models.Model):
    """An Entra ID group whose members get a portal role at sign-in, tenant-wide or limited to OU subtrees.

    ``scopes`` is the list of OU DNs as the administrator wrote them (normalised when a sign-in applies them).
    Several groups may carry the same role: a member of more than one gets the union of their scopes.
    """

    group_id = models.CharField(max_length=64)
    display_name = models.CharField(max_length=256)
    role = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="group_mappings")
    tenant_wide = models.BooleanField(default=False)
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group_id", "role"], name="portal_grouprolemapping_unique")]
        ordering = ["display_name", "group_id"]

    def __str__(self) -> str:
        return f"{self.display_name} as {self.role.name}"
