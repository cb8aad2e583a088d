"""Drop soa_mailbox_upn_prefix_idx: the same index as the one ``upn``'s db_index already gives the column.

On PostgreSQL Django creates, for an indexed CharField, a plain b-tree and a ``varchar_pattern_ops`` one (the
``_like`` index) for prefix LIKE; the explicit index was a second copy of the latter, and on SQLite (no operator
classes) of the former. Every insert and every non-heap-only update of a mailbox paid for it, the inventory's
included; no query plan changes.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("soa", "0015_mailbox_fillfactor")]

    operations = [migrations.RemoveIndex(model_name="mailbox", name="soa_mailbox_upn_prefix_idx")]
