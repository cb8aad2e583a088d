"""Saving many rows of one model in few statements: the batch jobs' ``bulk_update`` and the import's ``bulk_create``.

Django's ``bulk_update`` writes one UPDATE with a CASE WHEN per field and row; building those expressions costs
more CPU than the statement saves once the rows carry JSON fields (measured on the writeback batches: about 20 ms
a row on a busy machine). On PostgreSQL ``update_rows`` sends one UPDATE for the whole batch, so the server parses
and plans one statement instead of one per row (pipelined ``executemany`` of the per-row UPDATE cost PostgreSQL
about twice the CPU, bench/bench_writeback.py). The rows travel as one JSON parameter that ``jsonb_to_recordset``
unpacks into typed columns: a statement with a placeholder per value (``FROM (VALUES ...)``, as before) is too long
for the driver's cache of converted queries, and converting it cost the writeback batch a tenth of its CPU. Rows
whose values JSON cannot carry as they are (a JSON field with its own encoder, a value of another type) take the
VALUES statement. SQLite runs the per-row UPDATE through ``executemany``, in-process. Values are prepared by each
field as ``save()`` would prepare them.

``insert_rows`` is ``bulk_create`` without its per-value compilation, which cost the inventory import a third of its
time (profiled at 10,000 mailboxes: 794,000 ``prepare_value`` calls). Text, integer and boolean values go as they are;
the other fields prepare theirs as ``save()`` would. On PostgreSQL the rows stream through COPY, with primary keys
drawn from the table's sequence first, written as COPY's text format by ``_copy_text`` (psycopg's ``write_row`` asks a
dumper for every value: a fifth of a PostgreSQL import's CPU); SQLite takes multi-row INSERTs that return the keys.
"""

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

from django.db import connection, models
from django.utils import timezone
from psycopg.types.json import Jsonb

# Rows per statement: a batch job's rows fit in one; the bound keeps a caller's larger list within the 65,535
# parameters a PostgreSQL statement may carry (VALUES), and a JSON document within a few megabytes.
ROWS_PER_STATEMENT = 500


def update_rows(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write ``fields`` of every row (all of one model) by primary key; nothing when ``rows`` is empty."""
    if len(set(fields)) != len(fields):  # PostgreSQL refuses a column set twice, SQLite keeps the last: refuse both
        raise ValueError(f"update_rows: a field is named twice in {list(fields)}")
    if not rows:
        return
    meta = type(rows[0])._meta
    columns = [meta.get_field(name) for name in fields]
    if connection.vendor == "postgresql":
        try:
            documents = _as_json(columns, rows)
        except _NotJson:
            _update_from_values(meta, columns, _params(columns, rows))
        else:
            _update_from_json(meta, columns, documents)
    else:
        _update_each(meta, columns, _params(columns, rows))


def _params(columns: list[models.Field], rows: Sequence[models.Model]) -> list[list]:
    preparers = [(_preparer(field), field.attname) for field in columns]
    return [[row.pk] + [prepare(getattr(row, attname)) for prepare, attname in preparers] for row in rows]


def _update_each(meta, columns: list[models.Field], params: list[list]) -> None:
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in columns)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(sql, [values[1:] + values[:1] for values in params])


def _update_from_values(meta, columns: list[models.Field], params: list[list]) -> None:
    quote = connection.ops.quote_name
    # Every value is cast: a VALUES list takes a column's type from its first row, where NULL or text is no type.
    casts = [f"CAST(%s AS {field.db_type(connection)})" for field in [meta.pk, *columns]]
    row_sql = "(" + ", ".join(casts) + ")"
    names = ", ".join(quote(f"v_{field.column}") for field in [meta.pk, *columns])
    assignments = ", ".join(f"{quote(field.column)} = v.{quote(f'v_{field.column}')}" for field in columns)
    pk = quote(meta.pk.column)
    with connection.cursor() as cursor:
        for start in range(0, len(params), ROWS_PER_STATEMENT):
            chunk = params[start : start + ROWS_PER_STATEMENT]
            sql = (
                f"UPDATE {quote(meta.db_table)} SET {assignments} "  # noqa: S608 - names are quoted model metadata
                f"FROM (VALUES {', '.join([row_sql] * len(chunk))}) AS v({names}) "
                f"WHERE {quote(meta.db_table)}.{pk} = v.{quote(f'v_{meta.pk.column}')}"
            )
            cursor.execute(sql, [value for values in chunk for value in values])


class _NotJson(Exception):
    """A value JSON does not carry as the column's own adaptation would."""


def _json_value(field: models.Field, value: Any) -> Any:
    if isinstance(field, models.JSONField):
        if field.encoder is not None:
            raise _NotJson(field.name)
        return field.get_prep_value(value)  # the Python value, nested in the document as the column's JSON
    prepared = field.get_db_prep_save(value, connection)
    if prepared is None or isinstance(prepared, str | bool | int):
        return prepared
    if isinstance(prepared, dt.datetime | dt.date | dt.time):
        return prepared.isoformat()
    if isinstance(prepared, uuid.UUID | decimal.Decimal):
        return str(prepared)
    raise _NotJson(field.name)


def _kind(field: models.Field) -> type:
    """The Python type a text, integer or boolean field's value has when it needs no preparing."""
    return bool if isinstance(field, models.BooleanField) else int if isinstance(field, models.IntegerField) else str


def _json_preparer(field: models.Field):
    """``_json_value`` for one field, with the common values (text, numbers, aware datetimes, UUIDs, a JSON field's
    dicts and lists) taken straight: the general path cost a 10,000-row import page a second and a half."""
    slow = partial(_json_value, field)
    if isinstance(field, models.JSONField):
        if field.encoder is not None:
            raise _NotJson(field.name)
        return lambda value: value if type(value) in (dict, list) else slow(value)
    if isinstance(field, models.ForeignKey):
        return _json_preparer(field.target_field)
    if isinstance(field, _AS_IS):
        kind = _kind(field)
        return lambda value: value if value is None or type(value) is kind else slow(value)
    if isinstance(field, models.UUIDField):
        return lambda value: str(value) if type(value) is uuid.UUID else slow(value)
    if isinstance(field, models.DateTimeField):
        # What PostgreSQL's adaptation sends for an aware datetime; the column's type reads the text back.
        return lambda value: value.isoformat() if type(value) is dt.datetime and value.tzinfo else slow(value)
    return slow


def _as_json(columns: list[models.Field], rows: Sequence[models.Model]) -> list[str]:
    """The rows as JSON arrays of objects ({"c0": pk, "c1": first field, ...}), ROWS_PER_STATEMENT a document."""
    fields = [rows[0]._meta.pk, *columns]
    preparers = [(f"c{index}", _json_preparer(field), field.attname) for index, field in enumerate(fields)]
    objects = [{key: prepare(getattr(row, attname)) for key, prepare, attname in preparers} for row in rows]
    try:
        return [
            json.dumps(objects[start : start + ROWS_PER_STATEMENT], allow_nan=False)
            for start in range(0, len(objects), ROWS_PER_STATEMENT)
        ]
    except (TypeError, ValueError) as error:  # a JSON field holding what JSON cannot (as save() would refuse it)
        raise _NotJson(str(error)) from None


def _update_from_json(meta, columns: list[models.Field], documents: list[str]) -> None:
    quote = connection.ops.quote_name
    fields = [meta.pk, *columns]
    record = ", ".join(f"c{index} {field.db_type(connection)}" for index, field in enumerate(fields))
    assignments = ", ".join(f"{quote(field.column)} = v.c{index}" for index, field in enumerate(fields) if index)
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    sql = (
        f"UPDATE {table} SET {assignments} "  # noqa: S608 - names are quoted model metadata, types the fields' own
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({record}) WHERE {table}.{pk} = v.c0"
    )
    with connection.cursor() as cursor:
        for document in documents:
            cursor.execute(sql, [document])


# Fields whose Python value is already what the database takes, when it has the field's type.
_AS_IS = (models.CharField, models.TextField, models.IntegerField, models.BooleanField)


def _preparer(field: models.Field):
    """A function giving what ``field.get_db_prep_save`` gives for the common values, without its call chain;
    anything unusual goes through the field itself."""
    slow = partial(field.get_db_prep_save, connection=connection)
    if isinstance(field, models.ForeignKey):
        return _preparer(field.target_field)
    if isinstance(field, _AS_IS) and not isinstance(field, models.AutoField):
        kind = _kind(field)
        return lambda value: value if value is None or type(value) is kind else slow(value)
    if isinstance(field, models.UUIDField):
        native = connection.features.has_native_uuid_field
        return lambda value: (value if native else value.hex) if type(value) is uuid.UUID else slow(value)
    if isinstance(field, models.DateTimeField):
        adapt = connection.ops.adapt_datetimefield_value
        return lambda value: adapt(value) if type(value) is dt.datetime and value.tzinfo is not None else slow(value)
    if isinstance(field, models.JSONField):
        adapt, encoder = connection.ops.adapt_json_value, field.encoder
        return lambda value: adapt(value, encoder) if type(value) in (dict, list) else slow(value)
    return slow


def insert_rows(rows: Sequence[models.Model], fields: Sequence[str] | None = None) -> None:
    """INSERT every row (all of one model, not yet saved) and set its primary key; ``fields`` defaults to all the
    model's concrete fields but the key. auto_now and auto_now_add fields get the time of the call, as ``save()``."""
    if not rows:
        return
    meta = type(rows[0])._meta
    names = fields if fields is not None else [f.name for f in meta.concrete_fields if not f.primary_key]
    columns = [meta.get_field(name) for name in names]
    now = timezone.now()
    stamped = [f.attname for f in columns if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    for row in rows:
        for attname in stamped:
            setattr(row, attname, now)
    preparers = [(_preparer(field), field.attname) for field in columns]
    values = [[prepare(getattr(row, attname)) for prepare, attname in preparers] for row in rows]
    if connection.vendor == "postgresql":
        keys = _copy_in(meta, columns, values)
    else:
        keys = _insert_returning(meta, columns, values)
    for row, key in zip(rows, keys, strict=True):
        row.pk = key
        row._state.adding, row._state.db = False, connection.alias


def _copy_in(meta, columns: list[models.Field], values: list[list]) -> list[int]:
    quote = connection.ops.quote_name
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, meta.pk.column, len(values)],
        )
        keys = [key for (key,) in cursor.fetchall()]
        names = ", ".join([pk, *(quote(field.column) for field in columns)])
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            _copy_rows(copy, [[key, *row] for key, row in zip(keys, values, strict=True)])
    return keys


def _escaped(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


# COPY's text format of each type a preparer gives on PostgreSQL (a Jsonb wrapper for a JSON field).
_COPY_TEXT = {
    str: _escaped,
    int: str,
    bool: lambda value: "t" if value else "f",
    type(None): lambda value: "\\N",
    uuid.UUID: str,
    dt.datetime: lambda value: value.isoformat(),
    Jsonb: lambda value: _escaped((value.dumps or json.dumps)(value.obj)),
}


class _NotCopyText(Exception):
    pass


def _copy_text(value: Any) -> str:
    try:
        return _COPY_TEXT[type(value)](value)
    except KeyError:
        raise _NotCopyText from None


def _copy_rows(copy, rows: list[list]) -> None:
    """Write ``rows`` as COPY's text; a value of another type sends them through psycopg's own adaptation."""
    try:
        text = "".join("\t".join([_copy_text(value) for value in row]) + "\n" for row in rows)
    except _NotCopyText:
        for row in rows:
            copy.write_row(row)
        return
    copy.write(text)


def _insert_returning(meta, columns: list[models.Field], values: list[list]) -> list[int]:
    quote = connection.ops.quote_name
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    per_statement = max(1, (connection.features.max_query_params or 65535) // max(len(columns), 1))
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in columns)}) VALUES "  # noqa: S608
    keys: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            chunk = values[start : start + per_statement]
            cursor.execute(
                head + ", ".join([row_sql] * len(chunk)) + f" RETURNING {quote(meta.pk.column)}",
                [value for row in chunk for value in row],
            )
            keys.extend(key for (key,) in cursor.fetchall())
    return keys


def insert_values(model: type[models.Model], fields: Sequence[str], values: Sequence[Sequence[Any]]) -> None:
    """INSERT one row per item of ``values`` (each the Python values of ``fields``, in order), without building
    model instances and without reading keys back: for rows nothing refers to yet, such as the import's addresses.
    auto_now fields among ``fields`` are the caller's to fill."""
    if not values:
        return
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    preparers = [_preparer(field) for field in columns]
    prepared = [[prepare(value) for prepare, value in zip(preparers, row, strict=True)] for row in values]
    quote = connection.ops.quote_name
    names = ", ".join(quote(field.column) for field in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {quote(meta.db_table)} ({names}) FROM STDIN") as copy:
                _copy_rows(copy, prepared)
        else:
            placeholders = ", ".join(["%s"] * len(columns))
            cursor.executemany(f"INSERT INTO {quote(meta.db_table)} ({names}) VALUES ({placeholders})", prepared)  # noqa: S608
