"""Presentation helpers for mailbox values."""

from django import template
from django.utils.html import format_html, format_html_join

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
