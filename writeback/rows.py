"""Saving many changed rows of one model in one statement: the batch jobs' ``bulk_update``.

Django's ``bulk_update`` writes one UPDATE with a CASE WHEN per field and row; building those expressions costs
more CPU than the statement saves once the rows carry JSON fields (measured on the writeback batches: about 20 ms
a row on a busy machine). On PostgreSQL ``update_rows`` sends one ``UPDATE ... FROM (VALUES ...)`` for the whole
batch, each value cast to its column's type: the server parses and plans one statement instead of one per row
(pipelined ``executemany`` of the per-row UPDATE cost PostgreSQL about twice the CPU, bench/bench_writeback.py).
SQLite runs the per-row UPDATE through ``executemany``, in-process. Values are prepared by each field as ``save()``
would prepare them.
"""

from collections.abc import Sequence

from django.db import connection, models

# Rows per statement: a batch job's rows fit in one; the bound keeps a caller's larger list within the 65,535
# parameters a PostgreSQL statement may carry.
ROWS_PER_STATEMENT = 500


def update_rows(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write ``fields`` of every row (all of one model) by primary key; nothing when ``rows`` is empty."""
    if not rows:
        return
    meta = type(rows[0])._meta
    columns = [meta.get_field(name) for name in fields]
    params = [
        [row.pk] + [field.get_db_prep_save(getattr(row, field.attname), connection) for field in columns]
        for row in rows
    ]
    if connection.vendor == "postgresql":
        _update_from_values(meta, columns, params)
    else:
        _update_each(meta, columns, params)


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
