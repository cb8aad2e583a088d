"""The domain's data. A first cut of Mailbox: its keys, placement in the directory and authority.

The inventory work extends it with attribute values, drift and read times; keep this the one Mailbox.
"""

from django.db import models

from soa.choices import Authority


class Mailbox(models.Model):
    """One directory-synced recipient, known to both Exchange Online and Active Directory."""

    exo_object_id = models.UUIDField(null=True, blank=True, unique=True, help_text="EXO ExternalDirectoryObjectId")
    ad_guid = models.UUIDField(null=True, blank=True, unique=True, help_text="AD objectGUID")
    immutable_id = models.CharField(max_length=64, blank=True, db_index=True)
    dn = models.CharField(max_length=1024, blank=True)
    # Lower-case canonical DN (portal.dn.normalize_dn): what OU scopes match against.
    dn_norm = models.CharField(max_length=1024, blank=True, db_index=True)
    upn = models.CharField(max_length=320, db_index=True)
    display_name = models.CharField(max_length=256, blank=True)
    department = models.CharField(max_length=256, blank=True)
    recipient_type_details = models.CharField(max_length=64, blank=True)
    is_dir_synced = models.BooleanField(default=True)
    authority = models.CharField(max_length=16, choices=Authority.choices, default=Authority.ON_PREM)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "mailboxes"
        ordering = ["display_name", "id"]

    def __str__(self) -> str:
        return self.upn
