"""Presentation helpers for mailbox values."""

from django import template
from django.utils.html import format_html, format_html_join

from portal.dn import container_names
from soa.validation import is_routing_address
from soa.values import is_moera

register = template.Library()


@register.filter
def attribute_value(value):
    """Lists one per line, booleans as Yes/No, absent as a dash; always escaped."""
    if value is None or value == "" or value == []:
        return format_html('<span class="muted">{}</span>', "—")
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, list):
        return format_html_join("", "<div>{}</div>", ((item,) for item in value))
    return str(value)


@register.filter
def tenant_address(raw: str) -> bool:
    """Whether a proxy address is one Exchange keeps (the MOERA or the hybrid routing address): the page offers no
    Remove or Make primary for it, since the change service would refuse both."""
    kind, _, address = str(raw).partition(":")
    return kind.lower() == "smtp" and (is_moera(address) or is_routing_address(address))


@register.filter
def ou_of(dn: str) -> str:
    """The OU path of a mailbox's DN, top down ("Corp / Sales"), for a list column."""
    return " / ".join(container_names(dn or "")) if dn else ""


# A wave's events as its page's history names them; an action not listed shows as its code.
WAVE_EVENT_LABELS = {
    "soa.wave.created": "Created", "soa.wave.updated": "Settings changed", "soa.wave.cloned": "Created as a copy",
    "soa.wave.members_added": "Members added", "soa.wave.members_removed": "Members removed",
    "soa.wave.submitted": "Submitted for approval", "soa.wave.withdrawn": "Withdrawn to draft",
    "soa.wave.approval_recorded": "Approved (more approvals needed)", "soa.wave.approved": "Approved",
    "soa.wave.rejected": "Rejected", "soa.wave.started": "Started", "soa.wave.paused": "Paused",
    "soa.wave.resumed": "Resumed", "soa.wave.completed": "Completed", "soa.wave.cancelled": "Cancelled",
    "soa.wave.rollback_created": "Rollback wave created", "soa.wave.exported": "Results exported",
}  # fmt: skip


@register.filter
def wave_event_label(action: str) -> str:
    return WAVE_EVENT_LABELS.get(action, action)
