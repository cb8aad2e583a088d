"""Database triggers that make the audit table append-only, for PostgreSQL and SQLite.

Installed by migration 0002. They refuse UPDATE and DELETE whoever asks: the application, a shell or raw
SQL. They do not stop TRUNCATE on PostgreSQL (an owner's maintenance operation, and how Django's test
flush empties tables); nor someone who drops the trigger first, which is what the hash chain is for.
"""

TABLE = "portal_auditevent"
MESSAGE = "audit events are append-only: UPDATE and DELETE are refused"

_SQLITE_INSTALL = [
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
]
_SQLITE_UNINSTALL = [f"DROP TRIGGER IF EXISTS {TABLE}_no_update", f"DROP TRIGGER IF EXISTS {TABLE}_no_delete"]

_POSTGRES_INSTALL = [
    f"""CREATE OR REPLACE FUNCTION {TABLE}_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END $$""",
    f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}",
    f"""CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION {TABLE}_refuse_change()""",
]
_POSTGRES_UNINSTALL = [
    f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}",
    f"DROP FUNCTION IF EXISTS {TABLE}_refuse_change()",
]


def statements(vendor: str, install: bool) -> list[str]:
    if vendor == "sqlite":
        return _SQLITE_INSTALL if install else _SQLITE_UNINSTALL
    if vendor == "postgresql":
        return _POSTGRES_INSTALL if install else _POSTGRES_UNINSTALL
    raise NotImplementedError(f"No append-only audit triggers are written for the {vendor} database.")


def install(schema_editor) -> None:
    for statement in statements(schema_editor.connection.vendor, install=True):
        schema_editor.execute(statement)


def uninstall(schema_editor) -> None:
    for statement in statements(schema_editor.connection.vendor, install=False):
        schema_editor.execute(statement)
