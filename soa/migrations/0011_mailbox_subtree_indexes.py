"""Indexes that let the mailbox list's OU filter and a user's OU scope run as index range scans on PostgreSQL.

Both match a subtree: the DN (scope) or parent OU (filter) equals the base or ends with "," + base. A b-tree cannot
answer a suffix, so at a million mailboxes a small OU's list and its count read the whole table. Reversed, the
suffix is a prefix (portal.roles.subtree_filter writes the match on REVERSE(column)), and an expression index with
text_pattern_ops answers a prefix LIKE under any collation. PostgreSQL only: SQLite's REVERSE is a Python function
Django registers, which SQLite cannot index; there the match stays correct and scans as before.
"""

from django.db import migrations

_INDEXES = [("soa_mailbox_dn_rev_idx", "dn_norm"), ("soa_mailbox_ou_rev_idx", "ou_norm")]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, column in _INDEXES:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS {name} ON soa_mailbox ((REVERSE("{column}")::text) text_pattern_ops)'
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _ in _INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("soa", "0010_readiness_snapshots")]

    operations = [migrations.RunPython(forwards, backwards)]
