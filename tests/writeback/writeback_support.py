"""What the writeback tests share: a private directory that can be stopped and started again on the same data and
port, mailboxes paired with its users as the inventory would store them, and reading AD on a connection of its own.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
from ldap3.utils.conv import escape_bytes

from portal.dn import normalize_dn
from sandbox.directory import SandboxDirectory, generate_users
from soa.choices import Authority
from soa.models import Mailbox
from soa.values import ad_values
from writeback.directory import DirectoryClient, DirectoryConfig

USERS = 60
SEED = 71
MOERA_DOMAIN = "contoso.onmicrosoft.com"


@dataclass
class Directory:
    """A private slapd whose database survives a stop: ``stop`` and ``start`` as an outage and its end."""

    instance: SandboxDirectory
    workdir: Path

    def stop(self) -> None:
        self.instance.stop()

    def start(self) -> None:
        self.instance = SandboxDirectory.start(
            users=USERS, seed=SEED, workdir=self.workdir, keep=True, port=self.instance.port
        )

    def point_settings(self, settings) -> None:
        settings.LDAP_URL = self.instance.url
        settings.LDAP_BIND_DN = self.instance.bind_dn
        settings.LDAP_PASSWORD_FILE = str(self.instance.password_file)
        settings.LDAP_BASE_DN = self.instance.base_dn

    def read(self, guid: uuid.UUID, *attributes: str) -> dict[str, list[str]]:
        """The entry's attributes as a separate plain ldap3 connection reads them (text values, lists)."""
        server = ldap3.Server(self.instance.url, get_info=ldap3.NONE)
        with ldap3.Connection(server, self.instance.bind_dn, self.instance.password, auto_bind=True) as conn:
            conn.search(self.instance.base_dn, f"(objectGUID={escape_bytes(guid.bytes_le)})", attributes=attributes)
            (entry,) = [item for item in conn.response if item["type"] == "searchResEntry"]
            raw = entry["raw_attributes"]
            return {name: [value.decode() for value in raw.get(name, [])] for name in attributes}

    def edit(self, guid: uuid.UUID, changes: dict[str, Any]) -> None:
        """Someone editing the entry directly in AD (a plain ldap3 modify)."""
        server = ldap3.Server(self.instance.url, get_info=ldap3.NONE)
        with ldap3.Connection(server, self.instance.bind_dn, self.instance.password, auto_bind=True) as conn:
            conn.search(self.instance.base_dn, f"(objectGUID={escape_bytes(guid.bytes_le)})", attributes=["1.1"])
            dn = conn.response[0]["dn"]
            assert conn.modify(dn, changes), conn.result


def start_directory(workdir: Path) -> Directory:
    return Directory(SandboxDirectory.start(users=USERS, seed=SEED, workdir=workdir, keep=True), workdir)


_USERS = list(generate_users(USERS, seed=SEED))
_next_user = itertools.count()


def cloud_mailbox() -> Mailbox:
    """A cloud-managed mailbox paired with a directory user no other test has written, stored as the inventory
    would store it: AD's values as read, the cloud's the same plus the MOERA Exchange Online adds."""
    index = next(_next_user)
    assert index < USERS, "the directory has run out of unused users; raise USERS"
    user = _USERS[index]
    guid = uuid.UUID(bytes_le=user["objectGUID"])
    with DirectoryClient(DirectoryConfig.from_settings()) as directory:
        entry = directory.find_by_guid(guid)
    ad = ad_values(entry["attributes"])
    alias = user["mailNickname"]
    cloud = {**ad, "EmailAddresses": [*ad["EmailAddresses"], f"smtp:{alias}@{MOERA_DOMAIN}"]}
    return Mailbox.objects.create(
        ad_guid=guid, dn=user["dn"], dn_norm=normalize_dn(user["dn"]),
        ou_norm=normalize_dn(user["dn"].split(",", 1)[1]),
        upn=user["userPrincipalName"], display_name=user["displayName"], authority=Authority.CLOUD,
        primary_smtp=user["mail"], in_ad=True, in_exo=True, ad_values=ad, exo_values=cloud,
    )  # fmt: skip
