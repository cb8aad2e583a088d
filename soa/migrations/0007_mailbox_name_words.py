import re

import django.db.models.deletion
from django.db import migrations, models

# A copy of soa.name_words as it was when this migration was written (a migration must not follow later code).
_BOUNDARY = re.compile(r"[\s,;()/\\.\-'’]+")
_CHUNK = 2000


def _suffixes(search_name):
    name = search_name.strip()
    starts = [match.end() for match in _BOUNDARY.finditer(name) if 0 < match.end() < len(name)]
    return list(dict.fromkeys(name[start:][:256] for start in starts))


def fill_name_words(apps, schema_editor):
    """The word rows of every mailbox already imported, in chunks (an import keeps them from now on)."""
    Mailbox = apps.get_model("soa", "Mailbox")
    MailboxNameWord = apps.get_model("soa", "MailboxNameWord")
    last = 0
    while True:
        rows = list(Mailbox.objects.filter(pk__gt=last).order_by("pk").values_list("pk", "search_name")[:_CHUNK])
        if not rows:
            return
        MailboxNameWord.objects.bulk_create(
            MailboxNameWord(mailbox_id=pk, suffix=suffix) for pk, name in rows for suffix in _suffixes(name)
        )
        last = rows[-1][0]


class Migration(migrations.Migration):
    dependencies = [
        ("soa", "0006_change_batches"),
    ]

    operations = [
        migrations.CreateModel(
            name="MailboxNameWord",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("suffix", models.CharField(max_length=256)),
                (
                    "mailbox",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="name_words", to="soa.mailbox"
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["suffix"], name="soa_name_word_prefix_idx", opclasses=["varchar_pattern_ops"])
                ],
                "constraints": [models.UniqueConstraint(fields=("mailbox", "suffix"), name="soa_name_word_unique")],
            },
        ),
        migrations.RunPython(fill_name_words, migrations.RunPython.noop),
    ]
