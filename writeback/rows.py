"""Saving many changed rows of one model in one round trip: the batch jobs' ``bulk_update``.

Django's ``bulk_update`` writes one UPDATE with a CASE WHEN per field and row; building those expressions costs
more CPU than the statement saves once the rows carry JSON fields (measured on the writeback batches: about 20 ms
a row on a busy machine). ``update_rows`` sends the plain ``UPDATE ... SET ... WHERE id = %s`` once per row through
``executemany``, which psycopg 3 pipelines (one round trip for the batch) and SQLite runs in-process. Values are
prepared by each field as ``save()`` would prepare them.
"""

from collections.abc import Sequence

from django.db import connection, models


def update_rows(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write ``fields`` of every row (all of one model) by primary key; nothing when ``rows`` is empty."""
    if not rows:
        return
    model = type(rows[0])
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in columns)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
    params = [
        [field.get_db_prep_save(getattr(row, field.attname), connection) for field in columns] + [row.pk]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
