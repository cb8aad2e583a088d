"""manage.py entra_group_map: map Entra ID groups to portal roles from the command line (audited, no actor).

For setting up a new portal before anyone can sign in (and for the demo): one mapping from the options, or several
from ``--file``, a JSON list of ``{"group_id", "name", "role", "tenant_wide", "scopes"}``. Running it again with the
same group and role changes that mapping instead of adding another.
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.group_roles import clean_group_id, group_mapping_save
from portal.models import GroupRoleMapping
from portal.roles import Role
from portal.services import PortalError


class Command(BaseCommand):
    help = "Give members of Entra ID groups a portal role, tenant-wide or limited to OU subtrees."

    def add_arguments(self, parser):
        parser.add_argument("--file", help="a JSON list of mappings (instead of the options below)")
        parser.add_argument("--group-id", help="the group's object id (a GUID)")
        parser.add_argument("--name", help="the group's display name")
        parser.add_argument("--role", choices=[role.value for role in Role])
        parser.add_argument("--tenant-wide", action="store_true", help="the role reaches every OU")
        parser.add_argument("--scope", action="append", default=[], help="an OU DN the role is limited to")
        parser.add_argument("--reason", default="set up from the command line")

    def handle(self, *args, file, group_id, name, role, tenant_wide, scope, reason, **options):
        if file:
            try:
                wanted = json.loads(Path(file).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot read the mappings in {file}: {exc}") from None
        elif group_id and name and role:
            wanted = [{"group_id": group_id, "name": name, "role": role, "tenant_wide": tenant_wide, "scopes": scope}]
        else:
            raise CommandError("Give --file, or --group-id, --name and --role.")
        try:
            with transaction.atomic():
                for entry in wanted:
                    self._map(entry, reason)
        except (PortalError, KeyError, ValueError, TypeError) as exc:
            raise CommandError(f"Mapping refused, nothing changed: {exc}") from None

    def _map(self, entry: dict, reason: str) -> None:
        existing = GroupRoleMapping.objects.filter(
            group_id=clean_group_id(entry["group_id"]), role__name=entry["role"]
        ).first()
        mapping = group_mapping_save(
            actor=None,
            mapping=existing,
            group_id=entry["group_id"],
            display_name=entry["name"],
            role=Role(entry["role"]),
            tenant_wide=bool(entry.get("tenant_wide")),
            scopes=entry.get("scopes") or [],
            reason=reason,
        )
        where = "tenant-wide" if mapping.tenant_wide else "in " + "; ".join(mapping.scopes)
        self.stdout.write(f"  {mapping.display_name:<20} {mapping.role.name:<14} {where}")
