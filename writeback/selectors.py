"""Reads of the writeback's rows for the pages, scoped to what the user may see (soa.selectors' mailbox scope)."""

from collections.abc import Iterable

from soa.models import Mailbox
from soa.selectors import mailbox_list
from writeback.models import WritebackTask


def writeback_tasks_of(*, user, mailbox: Mailbox, task_ids: Iterable[int]) -> dict[int, WritebackTask]:
    """The writeback tasks ``task_ids`` of ``mailbox`` by id, when the user may see the mailbox; ids of another
    mailbox, or of one outside the user's scope, are left out."""
    ids = {int(pk) for pk in task_ids}
    if not ids:
        return {}
    tasks = WritebackTask.objects.filter(pk__in=ids, mailbox_id=mailbox.pk, mailbox__in=mailbox_list(user=user))
    return {task.pk: task for task in tasks}
