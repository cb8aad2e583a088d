"""Indexes of the audit list at a million events: its order and keyset cursor (occurred_at, id), and on PostgreSQL
a trigram index for the object filter, which matches text anywhere in a value (a b-tree cannot serve it); and the
names recorded for the system and jobs (events without a user), which the actor filter reads by a loose index scan
(portal.selectors.actor_filter; people are found by their id). Indexes only: the append-only triggers (0002, 0006)
are untouched, and adding an index is no UPDATE."""

from django.db import migrations, models

# The expressions are the ones Django writes for icontains on PostgreSQL (UPPER(col::text) LIKE ...), so the planner
# matches them. pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it. Where it cannot be
# created the filters stay correct and are only slower, so the migration carries on without it.
# A full index, not a partial one: PostgreSQL keeps statistics of a full expression index's values, which is how it
# knows a common word matches most events and walks the time index instead.
_TRIGRAM = [("portal_audit_repr_trgm", "object_repr")]
_EXTENSION = """DO $$ BEGIN CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'pg_trgm not available: the audit text filters run without an index'; END $$"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(_EXTENSION)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        if cursor.fetchone() is None:
            return
    for name, column in _TRIGRAM:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS {name} ON portal_auditevent USING gin ((UPPER("{column}"::text)) gin_trgm_ops)'
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _ in _TRIGRAM:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("portal", "0007_entra_signin")]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["occurred_at", "id"], name="portal_audit_time_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(actor__isnull=True), fields=["actor_name"], name="portal_audit_unnamed_actor_idx"
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
