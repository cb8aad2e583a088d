"""Database triggers that make the audit table append-only, for PostgreSQL and SQLite.

Installed by migration 0002. They refuse UPDATE and DELETE whoever asks: the application, a shell or raw
SQL. They do not stop TRUNCATE on PostgreSQL (an owner's maintenance operation, and how Django's test
flush empties tables); nor someone who drops the trigger first, which is what the hash chain is for.

Migration 0004 adds SQLite's insert guard. SQLite's ``REPLACE INTO`` (``INSERT OR REPLACE``) resolves a clash on the
id or on the unique hash by deleting the row it clashes with, and that implicit delete fires no delete trigger: an
event could be replaced whole. The guard refuses, before any row is touched, an insert whose id is not above every
existing id (so also a back-dated insert into a gap) or whose hash is already there. PostgreSQL needs no guard: it
has no REPLACE, a clashing INSERT fails on the key, and ``INSERT ... ON CONFLICT DO UPDATE`` fires the update trigger.
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
INSERT_MESSAGE = "audit events are append-only: an insert must not reuse or go below an existing id, nor reuse a hash"
# NEW.id is -1 in a BEFORE INSERT trigger when the statement leaves the id to SQLite, which then appends: allowed.
_SQLITE_GUARD_INSTALL = [
    f"""CREATE TRIGGER IF NOT EXISTS {TABLE}_no_replace BEFORE INSERT ON {TABLE}
        WHEN (NEW.id > 0 AND NEW.id <= (SELECT MAX(id) FROM {TABLE}))
          OR EXISTS (SELECT 1 FROM {TABLE} WHERE hash = NEW.hash)
        BEGIN SELECT RAISE(ABORT, '{INSERT_MESSAGE}'); END""",  # noqa: S608 (constants, no input)
]
_SQLITE_GUARD_UNINSTALL = [f"DROP TRIGGER IF EXISTS {TABLE}_no_replace"]

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


def statements(vendor: str, install: bool, *, guard: bool = True) -> list[str]:
    """Every trigger statement for ``vendor``: migration 0002's, then (``guard``) migration 0004's insert guard."""
    if vendor == "sqlite":
        if install:
            return _SQLITE_INSTALL + (_SQLITE_GUARD_INSTALL if guard else [])
        return _SQLITE_UNINSTALL + (_SQLITE_GUARD_UNINSTALL if guard else [])
    if vendor == "postgresql":
        return _POSTGRES_INSTALL if install else _POSTGRES_UNINSTALL
    raise NotImplementedError(f"No append-only audit triggers are written for the {vendor} database.")


def install(schema_editor) -> None:
    """Migration 0002: refuse UPDATE and DELETE."""
    for statement in statements(schema_editor.connection.vendor, install=True, guard=False):
        schema_editor.execute(statement)


def uninstall(schema_editor) -> None:
    for statement in statements(schema_editor.connection.vendor, install=False, guard=False):
        schema_editor.execute(statement)


def install_guard(schema_editor) -> None:
    """Migration 0004: refuse REPLACE and inserts that reuse an id or a hash (SQLite; nothing to do elsewhere)."""
    if schema_editor.connection.vendor == "sqlite":
        for statement in _SQLITE_GUARD_INSTALL:
            schema_editor.execute(statement)


def uninstall_guard(schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        for statement in _SQLITE_GUARD_UNINSTALL:
            schema_editor.execute(statement)
