"""manage.py demo_accounts: one local account per role, for the demo. Never run against production data.

Passwords are random, kept in a 0600 file so re-running the demo keeps the same logins, and printed once.
"""

import json
import secrets
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.models import User
from portal.roles import Role
from portal.services import role_assign

ACCOUNTS = [
    # username, role, display name
    ("helpdesk", Role.HELPDESK, "Hana Helpdesk"),
    ("operator", Role.WAVE_OPERATOR, "Omar Operator"),
    ("approver", Role.APPROVER, "Ada Approver"),
    ("approver2", Role.APPROVER, "Abel Approver"),
    ("auditor", Role.AUDITOR, "Aud Itor"),
    ("admin", Role.ADMIN, "Alex Admin"),
]


class Command(BaseCommand):
    help = "Create or refresh the demo accounts (one per role) and write their logins to a file."

    def add_arguments(self, parser):
        parser.add_argument("--logins-file", required=True, help="JSON file holding the demo passwords (0600)")
        parser.add_argument(
            "--helpdesk-scope", action="append", default=[], help="OU DN the helpdesk account is limited to"
        )

    def handle(self, *args, logins_file: str, helpdesk_scope: list[str], **options):
        path = Path(logins_file)
        passwords: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        with transaction.atomic():
            for username, role, full_name in ACCOUNTS:
                password = passwords.setdefault(username, secrets.token_urlsafe(12))
                first, _, last = full_name.partition(" ")
                user, _ = User.objects.get_or_create(
                    username=username, defaults={"first_name": first, "last_name": last}
                )
                user.set_password(password)
                user.save()
                scoped = role is Role.HELPDESK and helpdesk_scope
                if not user.role_assignments.filter(role__name=role).exists():
                    role_assign(
                        actor=None,
                        user=user,
                        role=role,
                        tenant_wide=not scoped,
                        scopes=helpdesk_scope if scoped else (),
                        reason="demo account",
                    )
        if not passwords:
            raise CommandError("No demo account was created.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(passwords, indent=2))
        for username, role, _ in ACCOUNTS:
            self.stdout.write(f"  {username:<10} {passwords[username]:<18} {role}")
