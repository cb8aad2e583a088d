"""Make the audit table append-only in the database itself (see portal/audit_triggers.py)."""

from django.db import migrations

from portal import audit_triggers


def forwards(apps, schema_editor):
    audit_triggers.install(schema_editor)


def backwards(apps, schema_editor):
    audit_triggers.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("portal", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
