"""Reads of the domain, each already limited to what the asking user may see."""

from django.db.models import Count, Q, QuerySet

from portal.roles import Action, scope_filter
from soa.choices import Authority
from soa.models import Mailbox


def mailbox_list(*, user, action: Action = Action.MAILBOX_VIEW) -> QuerySet[Mailbox]:
    """Mailboxes the user may perform ``action`` on (their OU scopes for that action)."""
    return Mailbox.objects.filter(scope_filter(user, action, "dn_norm"))


def mailbox_counts(*, user) -> dict[str, int]:
    """Totals by authority over the mailboxes the user may see, in one query."""
    return mailbox_list(user=user).aggregate(
        total=Count("id"),
        cloud=Count("id", filter=Q(authority=Authority.CLOUD)),
        on_prem=Count("id", filter=Q(authority=Authority.ON_PREM)),
    )
