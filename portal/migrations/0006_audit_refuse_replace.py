"""Refuse REPLACE INTO and inserts that reuse an audit event's id or hash (SQLite; see portal/audit_triggers.py)."""

from django.db import migrations

from portal import audit_triggers


def forwards(apps, schema_editor):
    audit_triggers.install_guard(schema_editor)


def backwards(apps, schema_editor):
    audit_triggers.uninstall_guard(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("portal", "0005_bulk_edit_action")]

    operations = [migrations.RunPython(forwards, backwards)]
