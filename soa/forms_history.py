"""The moments a mailbox's point-in-time and comparison pages are asked for: UTC date and time, not in the future."""

import datetime as dt

from django import forms
from django.utils import timezone

FORMATS = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
HELP = "UTC, as 2026-11-30T14:05 (a date alone means its start)."


class MomentField(forms.DateTimeField):
    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S")
    default_error_messages = {
        "invalid": "Enter a date and time such as 2026-11-30T14:05 (UTC).",
        "required": "Pick a date and time.",
    }

    def __init__(self, **kwargs):
        super().__init__(input_formats=FORMATS, help_text=HELP, **kwargs)

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        if moment.year < 1970:
            raise forms.ValidationError("Pick a moment after 1970; the portal keeps no history before then.")
        # The page's times are UTC whatever the browser's zone: an input without a zone is read as UTC.
        moment = moment if timezone.is_aware(moment) else moment.replace(tzinfo=dt.UTC)
        if moment > timezone.now():
            raise forms.ValidationError(
                f"{moment:%Y-%m-%d %H:%M:%S} UTC is in the future; pick a moment up to now "
                f"({timezone.now():%Y-%m-%d %H:%M:%S} UTC)."
            )
        return moment


class MomentForm(forms.Form):
    at = MomentField(label="As of")


class CompareForm(forms.Form):
    earlier = MomentField(label="From")
    later = MomentField(label="To")

    def clean(self):
        cleaned = super().clean()
        earlier, later = cleaned.get("earlier"), cleaned.get("later")
        if earlier and later and earlier >= later:
            raise forms.ValidationError("The first moment must be earlier than the second.")
        return cleaned
