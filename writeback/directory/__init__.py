"""The Active Directory client: the names the rest of the portal uses, importable from ``writeback.directory``.

``client`` holds ``DirectoryClient`` and value escaping, ``connection`` binding and TLS, ``modify`` the minimal
modify plan, ``errors`` the mapping of LDAP result codes, ``check`` the administrators' connection test (imported
from its module: it writes an audit event, so it is not part of the client).
"""

from writeback.directory.client import AD_USER_FILTER, DirectoryClient, Written, equality_filter, escape_dn_value
from writeback.directory.connection import DirectoryConfig, connect, ping
from writeback.directory.errors import (
    DirectoryConflict,
    DirectoryError,
    DirectoryInconsistentEntry,
    DirectoryNotFound,
    DirectoryPermanent,
    DirectoryRetryable,
)
from writeback.directory.modify import EXCHANGE_LDAP_ATTRIBUTES, Changes, plan_modify

__all__ = [
    "AD_USER_FILTER",
    "EXCHANGE_LDAP_ATTRIBUTES",
    "Changes",
    "DirectoryClient",
    "DirectoryConfig",
    "DirectoryConflict",
    "DirectoryError",
    "DirectoryInconsistentEntry",
    "DirectoryNotFound",
    "DirectoryPermanent",
    "DirectoryRetryable",
    "Written",
    "connect",
    "equality_filter",
    "escape_dn_value",
    "ping",
    "plan_modify",
]
