"""The rest of a Get-Mailbox object: the 200-odd properties real Exchange Online returns that the emulator does not
model, so that a listing moves as many bytes as a real one (exchange-facts §7.4: no server-side property
selection, 200+ properties per mailbox, 1,000 per page by default).

Names are those of Exchange's Mailbox object (Learn "Mailbox properties", Exchange Server API reference, and the
Get-Mailbox/Set-Mailbox cmdlet docs); values are typical of a licensed user mailbox in Exchange Online: quotas
as Exchange prints them ("100 GB (107,374,182,400 bytes)"), durations as "14.00:00:00", arrays of strings,
GUIDs and dates, with the OData annotations of exchange-facts §4.3 on collections, GUIDs and dates.

Cost: everything that is the same for every mailbox of a tenant is built and annotated once (``_tenant_part``,
cached per tenant); per record only the few values derived from its own ids are made, at serialisation time, so
the records kept in memory stay small at 200,000 mailboxes. The properties the emulator models (addresses,
custom attributes, flags, ids...) come from the record and keep their meaning.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

ZERO_GUID = "00000000-0000-0000-0000-000000000000"
COLLECTION = "#Collection(String)"


def _size(gb_or_bytes: float, unit: str = "GB") -> str:
    """Exchange's ByteQuantifiedSize text: "100 GB (107,374,182,400 bytes)"."""
    factor = {"KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
    number = int(gb_or_bytes * factor)
    shown = f"{gb_or_bytes:g}"
    return f"{shown} {unit} ({number:,} bytes)"


_AUDIT_ADMIN = [
    "Update", "MoveToDeletedItems", "SoftDelete", "HardDelete", "SendAs", "SendOnBehalf", "Create",
    "UpdateFolderPermissions", "UpdateInboxRules", "UpdateCalendarDelegation", "ApplyRecord", "MailItemsAccessed",
    "Send",
]  # fmt: skip
_AUDIT_DELEGATE = [
    "Update", "MoveToDeletedItems", "SoftDelete", "HardDelete", "SendAs", "SendOnBehalf", "Create",
    "UpdateFolderPermissions", "UpdateInboxRules", "ApplyRecord", "MailItemsAccessed",
]  # fmt: skip
_AUDIT_OWNER = [
    "Update", "MoveToDeletedItems", "SoftDelete", "HardDelete", "UpdateFolderPermissions", "UpdateInboxRules",
    "UpdateCalendarDelegation", "ApplyRecord", "MailItemsAccessed", "Send",
]  # fmt: skip

# Same for every licensed user mailbox of a tenant (Exchange Online defaults).
STATIC: dict[str, Any] = {
    "Database": "SANDPR01DG001-db042",
    "DatabaseGuid": "3f1c7a2e-5b9d-4c8e-a1f0-6d2b9e4c7a15",
    "MailboxProvisioningConstraint": None,
    "IsMonitoringMailbox": False,
    "MailboxRegion": None,
    "MailboxRegionLastUpdateTime": None,
    "MailboxRegionSuffix": "None",
    "MessageRecallProcessingEnabled": True,
    "MessageCopyForSentAsEnabled": False,
    "MessageCopyForSendOnBehalfEnabled": False,
    "MailboxProvisioningPreferences": [],
    "UseDatabaseRetentionDefaults": False,
    "RetainDeletedItemsUntilBackup": False,
    "DeliverToMailboxAndForward": False,
    "IsExcludedFromServingHierarchy": False,
    "IsHierarchyReady": True,
    "IsHierarchySyncEnabled": True,
    "IsPublicFolderSystemMailbox": False,
    "HasSnackyAppData": False,
    "LitigationHoldEnabled": False,
    "SingleItemRecoveryEnabled": True,
    "RetentionHoldEnabled": False,
    "EndDateForRetentionHold": None,
    "StartDateForRetentionHold": None,
    "RetentionComment": "",
    "RetentionUrl": "",
    "LitigationHoldDate": None,
    "LitigationHoldOwner": "",
    "ElcProcessingDisabled": False,
    "ComplianceTagHoldApplied": False,
    "WasInactiveMailbox": False,
    "DelayHoldApplied": False,
    "DelayReleaseHoldApplied": False,
    "PitrEnabled": False,
    "PitrCopyIntervalInSeconds": 0,
    "InactiveMailboxRetireTime": None,
    "OrphanSoftDeleteTrackingTime": None,
    "LitigationHoldDuration": "Unlimited",
    "ManagedFolderMailboxPolicy": None,
    "RetentionPolicy": "Default MRM Policy",
    "AddressBookPolicy": None,
    "CalendarRepairDisabled": False,
    "MailboxContainerGuid": None,
    "UnifiedMailbox": None,
    "AggregatedMailboxGuids": [],
    "ExchangeSecurityDescriptor": "System.Security.AccessControl.RawSecurityDescriptor",
    "ExchangeUserAccountControl": "None",
    "AdminDisplayVersion": "Version 15.20 (Build 8158.21)",
    "MessageTrackingReadStatusEnabled": True,
    "ExternalOofOptions": "External",
    "ForwardingAddress": None,
    "ForwardingSmtpAddress": None,
    "RetainDeletedItemsFor": "14.00:00:00",
    "IsMailboxEnabled": True,
    "Languages": [],
    "OfflineAddressBook": None,
    "ProhibitSendQuota": _size(99),
    "ProhibitSendReceiveQuota": _size(100),
    "RecoverableItemsQuota": _size(30),
    "RecoverableItemsWarningQuota": _size(20),
    "CalendarLoggingQuota": _size(6),
    "DowngradeHighPriorityMessagesEnabled": False,
    "ProtocolSettings": ["RemotePowerShell§1", "MAPI§1§§§§§§§§§§§§", "OWA§1", "ActiveSync§1"],
    "RecipientLimits": "500",
    "ImListMigrationCompleted": False,
    "SiloName": None,
    "IsResource": False,
    "IsLinked": False,
    "IsShared": False,
    "IsRootPublicFolderMailbox": False,
    "LinkedMasterAccount": "",
    "ResetPasswordOnNextLogon": False,
    "ResourceCapacity": None,
    "ResourceCustom": [],
    "ResourceType": None,
    "RoomMailboxAccountEnabled": None,
    "SCLDeleteThreshold": None,
    "SCLDeleteEnabled": None,
    "SCLRejectThreshold": None,
    "SCLRejectEnabled": None,
    "SCLQuarantineThreshold": None,
    "SCLQuarantineEnabled": None,
    "SCLJunkThreshold": None,
    "SCLJunkEnabled": None,
    "AntispamBypassEnabled": False,
    "UseDatabaseQuotaDefaults": False,
    "IssueWarningQuota": _size(98),
    "RulesQuota": _size(256, "KB"),
    "Office": "",
    "UMEnabled": False,
    "MaxSafeSenders": None,
    "MaxBlockedSenders": None,
    "ReconciliationId": None,
    "ThrottlingPolicy": None,
    "RoleAssignmentPolicy": "Default Role Assignment Policy",
    "DefaultPublicFolderMailbox": None,
    "EffectivePublicFolderMailbox": None,
    "SharingPolicy": "Default Sharing Policy",
    "RemoteAccountPolicy": None,
    "MailboxPlan": "ExchangeOnlineEnterprise-2a9c4e17-3b5d-4f6a-8c1e-9d0b2a4f6c8e",
    "ArchiveDatabase": None,
    "ArchiveGuid": ZERO_GUID,
    "ArchiveName": [],
    "JournalArchiveAddress": "",
    "ArchiveQuota": _size(100),
    "ArchiveWarningQuota": _size(90),
    "ArchiveDomain": "",
    "ArchiveStatus": "None",
    "ArchiveState": "None",
    "AutoExpandingArchiveEnabled": False,
    "DisabledMailboxLocations": False,
    "RemoteRecipientType": "None",
    "DisabledArchiveDatabase": None,
    "DisabledArchiveGuid": ZERO_GUID,
    "QueryBaseDN": None,
    "QueryBaseDNRestrictionEnabled": False,
    "MailboxMoveTargetMDB": None,
    "MailboxMoveSourceMDB": None,
    "MailboxMoveFlags": "None",
    "MailboxMoveRemoteHostName": "",
    "MailboxMoveBatchName": "",
    "MailboxMoveStatus": "None",
    "MailboxRelease": "E15",
    "ArchiveRelease": "",
    "IsPersonToPersonTextMessagingEnabled": False,
    "IsMachineToPersonTextMessagingEnabled": True,
    "UserSMimeCertificate": [],
    "UserCertificate": [],
    "CalendarVersionStoreDisabled": False,
    "PersistedCapabilities": ["BPOS_S_Enterprise", "BPOS_S_O365PAM", "BPOS_S_BookingsAddOn"],
    "SKUAssigned": True,
    "AuditEnabled": True,
    "AuditLogAgeLimit": "90.00:00:00",
    "AuditAdmin": _AUDIT_ADMIN,
    "AuditDelegate": _AUDIT_DELEGATE,
    "AuditOwner": _AUDIT_OWNER,
    "DefaultAuditSet": ["Admin", "Delegate", "Owner"],
    "UsageLocation": "Germany",
    "IsSoftDeletedByRemove": False,
    "IsSoftDeletedByDisable": False,
    "IsInactiveMailbox": False,
    "IncludeInGarbageCollection": False,
    "WhenSoftDeleted": None,
    "InPlaceHolds": [],
    "GeneratedOfflineAddressBooks": [],
    "AccountDisabled": False,
    "StsRefreshTokensValidFrom": "2026-01-12T08:14:55+00:00",
    "NonCompliantDevices": [],
    "EnforcedTimestamps": "[]",
    "DataEncryptionPolicy": None,
    "MessageCopyForSMTPClientSubmissionEnabled": True,
    "RecipientThrottlingThreshold": "Standard",
    "SharedEmailDomainTenant": "",
    "SharedEmailDomainState": "None",
    "SharedWithTargetSmtpAddress": "",
    "SharedEmailDomainStateLastModified": None,
    "ResourceProvisioningOptions": [],
    "Extensions": [],
    "HasPicture": False,
    "HasSpokenName": False,
    "AcceptMessagesOnlyFrom": [],
    "AcceptMessagesOnlyFromDLMembers": [],
    "AcceptMessagesOnlyFromSendersOrMembers": [],
    "AddressListMembership": [
        "\\Mailboxes(VLV)",
        "\\All Mailboxes(VLV)",
        "\\All Recipients(VLV)",
        "\\Offline Global Address List",
        "\\Default Global Address List",
        "\\All Users",
    ],  # fmt: skip
    "AdministrativeUnits": [],
    "ArbitrationMailbox": None,
    "BypassModerationFromSendersOrMembers": [],
    "GrantSendOnBehalfTo": [],
    "MaxSendSize": _size(35, "MB"),
    "MaxReceiveSize": _size(36, "MB"),
    "ModeratedBy": [],
    "ModerationEnabled": False,
    "PoliciesIncluded": [],
    "PoliciesExcluded": ["{26491cfc-9e50-4857-861b-0cb8df22b5d7}"],
    "EmailAddressPolicyEnabled": False,
    "RejectMessagesFrom": [],
    "RejectMessagesFromDLMembers": [],
    "RejectMessagesFromSendersOrMembers": [],
    "RequireSenderAuthenticationEnabled": False,
    "SimpleDisplayName": "",
    "SendModerationNotifications": "Always",
    "UMDtmfMap": [],
    "MailTip": None,
    "MailTipTranslations": [],
    "IsValid": True,
    "ExchangeVersion": "0.20 (15.0.0.0)",
    "ObjectCategory": "SANDPR01A001.PROD.OUTLOOK.COM/Configuration/Schema/Person",
    "ObjectClass": ["top", "person", "organizationalPerson", "user"],
    "ObjectState": "Unchanged",
    "OriginatingServer": "SANDPR01A001DC001.SANDPR01A001.PROD.OUTLOOK.COM",
    "ServerName": "sandpr01mb0042",
    "ServerLegacyDN": "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration/"
    "cn=Servers/cn=SANDPR01MB0042",
    "ThrottlingPolicyId": None,
    "GuestAgentCount": 0,
    "EnableUMLegacy": False,
}
GUIDS = {"DatabaseGuid", "ArchiveGuid", "DisabledArchiveGuid"}
DATES = {"StsRefreshTokensValidFrom", "WhenChanged", "WhenCreated", "WhenMailboxCreated"}


def annotate(item: dict[str, Any], guids: set[str] | frozenset[str], dates: set[str] | frozenset[str]) -> dict:
    """Each property with its OData type annotation before it, as Exchange's REST answers carry them."""
    shown: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, list):
            shown[f"{key}@odata.type"] = COLLECTION
        elif key in guids:
            shown[f"{key}@odata.type"] = "#Guid"
        elif key in dates and value is not None:
            shown[f"{key}@odata.type"] = "#DateTime"
        shown[key] = value
    return shown


@functools.lru_cache(maxsize=8)
def _tenant_part(initial_domain: str) -> dict[str, Any]:
    """STATIC plus the tenant's names, annotated: built once per tenant."""
    part = dict(STATIC)
    hosted = "Microsoft Exchange Hosted Organizations"
    part["OrganizationalUnit"] = f"sandpr01a001.prod.outlook.com/{hosted}/{initial_domain}"
    part["OrganizationalUnitRoot"] = initial_domain
    part["OrganizationId"] = (
        f"SANDPR01A001.PROD.OUTLOOK.COM/Microsoft Exchange Hosted Organizations/{initial_domain} - "
        f"SANDPR01A001.PROD.OUTLOOK.COM/ConfigurationUnits/{initial_domain}/Configuration"
    )
    return annotate(part, GUIDS, DATES)


def extra_properties(record: dict[str, Any], initial_domain: str, *, created: str, changed: str) -> dict[str, Any]:
    """The unmodelled properties of one mailbox, annotated: the tenant's shared part, then the per-record values
    (``created``/``changed``: WhenCreatedUTC/WhenChangedUTC as shown)."""
    shown = dict(_tenant_part(initial_domain))
    exchange_guid = record["ExchangeGuid"]
    digest = hashlib.blake2b(exchange_guid.encode(), digest_size=8).hexdigest()
    per_record = {
        "LegacyExchangeDN": "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/"
        f"cn={exchange_guid.replace('-', '')}-{record['Alias'][:8]}",
        "MailboxLocations": [
            f"1;{exchange_guid};Primary;sandpr01a001.prod.outlook.com;{STATIC['DatabaseGuid']}",
        ],
        "SamAccountName": f"${digest[:6].upper()}-{digest[6:].upper()}QN7B3",
        "WindowsLiveID": record["UserPrincipalName"],
        "MicrosoftOnlineServicesID": record["UserPrincipalName"],
        "NetID": digest.upper(),
        "WhenMailboxCreated": created.replace("Z", "+00:00") if created else None,
        "WhenChanged": changed.replace("Z", "+00:00") if changed else None,
        "WhenCreated": created.replace("Z", "+00:00") if created else None,
        "LastExchangeChangedTime": None,
    }
    shown.update(annotate(per_record, frozenset(), DATES))
    return shown
