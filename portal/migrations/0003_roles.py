"""Create the five role groups with their action permissions.

The table is copied here on purpose: a migration must keep meaning what it meant when written, whatever
portal.roles.ROLE_ACTIONS becomes. Changing a role's actions later takes a new migration.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLE_ACTIONS = {
    "helpdesk": ["mailbox_view", "mailbox_edit"],
    "wave_operator": ["mailbox_view", "wave_view", "wave_build", "wave_run"],
    "approver": ["mailbox_view", "wave_view", "wave_approve"],
    "auditor": ["mailbox_view", "wave_view", "audit_view", "audit_export", "audit_verify"],
    "admin": ["mailbox_view", "wave_view", "audit_view", "portal_configure", "jobs_view"],
}


def forwards(apps, schema_editor):
    # Permissions are normally created after all migrations ran; the groups need them now.
    portal_config = apps.get_app_config("portal")
    portal_config.models_module = True
    create_permissions(portal_config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_ACTIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = Permission.objects.filter(content_type__app_label="portal", codename__in=codenames)
        if permissions.count() != len(codenames):
            raise RuntimeError(f"Missing portal permissions for role {role}.")
        group.permissions.set(permissions)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_ACTIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0002_audit_append_only"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
