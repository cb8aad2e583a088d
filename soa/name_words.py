"""Finding a mailbox by any word of its name: the rows of soa.models.MailboxNameWord, kept wherever the name is.

A surname is rarely the first word of a display name ("Ann Archer", "Archer, Ann (Sales)"), and a prefix search on
the whole name finds only the first. Each word after the first starts a suffix of the name, stored in its own indexed
row, so "arch" and "ann arch" are both one index range scan, as the first word is on ``Mailbox.search_name``.
"""

import re
from collections.abc import Iterable

from soa.models import Mailbox, MailboxNameWord

# Words are separated by spaces and by the punctuation display names carry ("Archer, Ann (Sales)", "Smith-Jones",
# "O'Neil"): each part of a compound name is a word of its own too.
_BOUNDARY = re.compile(r"[\s,;()/\\.\-'’]+")
# A suffix longer than the column is cut: a prefix search typed that long is past what anyone types.
_MAX = MailboxNameWord._meta.get_field("suffix").max_length


def name_suffixes(search_name: str) -> list[str]:
    """The name from each word after the first, in order, without duplicates (``search_name`` is lower case)."""
    name = search_name.strip()
    starts = [match.end() for match in _BOUNDARY.finditer(name) if 0 < match.end() < len(name)]
    return list(dict.fromkeys(name[start:][:_MAX] for start in starts))


def name_words_replace(mailboxes: Iterable[Mailbox]) -> None:
    """Write the word rows of ``mailboxes`` (saved rows) from their ``search_name``, replacing what they held."""
    mailboxes = [mailbox for mailbox in mailboxes if mailbox.pk is not None]
    if not mailboxes:
        return
    MailboxNameWord.objects.filter(mailbox__in=mailboxes).delete()
    MailboxNameWord.objects.bulk_create(
        MailboxNameWord(mailbox=mailbox, suffix=suffix)
        for mailbox in mailboxes
        for suffix in name_suffixes(mailbox.search_name)
    )
