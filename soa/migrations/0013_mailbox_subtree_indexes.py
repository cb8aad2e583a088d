"""Indexes of the mailbox list at a million mailboxes: its OU filter and a user's OU scope as index range scans on
PostgreSQL, and its department filter in the page's order when it is also sorted by department.

Both match a subtree: the DN (scope) or parent OU (filter) equals the base or ends with "," + base. A b-tree cannot
answer a suffix, so at a million mailboxes a small OU's list and its count read the whole table. Reversed, the
suffix is a prefix (portal.roles.subtree_filter writes the match on REVERSE(column)), and an expression index with
text_pattern_ops answers a prefix LIKE under any collation. PostgreSQL only: SQLite's REVERSE is a Python function
Django registers, which SQLite cannot index; there the match stays correct and scans as before.

The department filter (any letter case) had an index of UPPER(department) alone: sorted by department as well,
PostgreSQL walked (department, id) from its start to meet the department's rows (3.7 s at a million mailboxes).
(UPPER(department), department, id) replaces it: its rows of one department come out in the page's order.
"""

import django.db.models.functions.text
from django.db import migrations, models

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
    dependencies = [("soa", "0012_tenant_default")]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.RemoveIndex(model_name="mailbox", name="soa_mailbox_dept_upper_idx"),
        migrations.AddIndex(
            model_name="mailbox",
            index=models.Index(
                django.db.models.functions.text.Upper("department"), models.F("department"), models.F("id"),
                name="soa_mailbox_dept_ci_idx",
            ),
        ),
    ]
