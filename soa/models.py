"""The domain's data: mailboxes as both Exchange Online and Active Directory describe them."""

from django.db import models

from soa.choices import Authority


class Mailbox(models.Model):
    """One directory-synced recipient, known to Exchange Online, Active Directory or (normally) both.

    ``exo_values`` and ``ad_values`` hold the mapped Exchange attributes as last read from each side, keyed by
    their Exchange Online property name (writeback.attributes); ``drift`` lists the names whose values differ.
    """

    exo_object_id = models.UUIDField(null=True, blank=True, unique=True, help_text="EXO ExternalDirectoryObjectId")
    ad_guid = models.UUIDField(null=True, blank=True, unique=True, help_text="AD objectGUID")
    immutable_id = models.CharField(max_length=64, blank=True, db_index=True)
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
            models.Index(fields=["upn"], name="soa_mailbox_upn_prefix_idx", opclasses=["varchar_pattern_ops"]),
            models.Index(fields=["search_name"], name="soa_mailbox_name_prefix_idx", opclasses=["varchar_pattern_ops"]),
        ]

    def __str__(self) -> str:
        return self.upn


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
