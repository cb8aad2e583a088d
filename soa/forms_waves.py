"""Forms of the pilot-wave pages. They check shapes only; the wave services enforce the rules."""

from collections.abc import Iterable

from django import forms
from django.conf import settings

from portal.limits import DESCRIPTION_MAX_LENGTH, REASON_MAX_LENGTH
from soa.choices import Authority, WaveDirection, WaveState
from soa.forms import RECIPIENT_TYPES, MailboxFilterForm
from soa.models import WAVE_MAX_APPROVALS, WAVE_MAX_BATCH_SIZE, WAVE_MAX_RATE
from soa.services.wave_members import csv_too_large
from soa.wave_csv import upload_lines

_DATETIME = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
SOURCE = "source"  # add-by-filter: the wave's source authority (what can still move)


class WaveStateFilterForm(forms.Form):
    """The wave list's filter."""

    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *WaveState.choices])
    mine = forms.BooleanField(required=False, label="Only mine (created or submitted)")


class WaveCreateForm(forms.Form):
    """A new draft wave: what it moves, who must approve it, how fast it may run and when."""

    name = forms.CharField(max_length=200)
    direction = forms.ChoiceField(choices=WaveDirection.choices)
    description = forms.CharField(
        required=False, max_length=DESCRIPTION_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 3})
    )
    required_approvals = forms.IntegerField(
        min_value=1, max_value=WAVE_MAX_APPROVALS, initial=1, label="Approvals required"
    )
    batch_size = forms.IntegerField(min_value=1, max_value=WAVE_MAX_BATCH_SIZE, initial=50, label="Batch size")
    max_rate = forms.FloatField(min_value=0.01, max_value=WAVE_MAX_RATE, initial=5.0, label="Max flips per second")
    window_start = forms.DateTimeField(required=False, widget=_DATETIME, label="Run no earlier than (UTC)")
    window_end = forms.DateTimeField(required=False, widget=_DATETIME, label="Run no later than (UTC)")


class MemberSearchForm(MailboxFilterForm):
    """The mailbox search inside the wave page, to pick members from."""


class WaveFilterForm(forms.Form):
    """Add every mailbox matching the mailbox list's filters (plus department)."""

    prefix = "filter"  # the picker's search form on the same page uses the plain names

    q = forms.CharField(required=False, max_length=320, label="A word of the name, the UPN or an address starts with")
    ou = forms.CharField(required=False, max_length=1024, label="In OU (DN)")
    department = forms.CharField(required=False, max_length=256)
    recipient_type = forms.ChoiceField(
        required=False, choices=[("", "Any type"), *((t, t) for t in RECIPIENT_TYPES)], label="Recipient type"
    )
    drift = forms.ChoiceField(
        required=False, choices=[("", "Drift or not"), ("yes", "With drift"), ("no", "Without drift")]
    )
    authority = forms.ChoiceField(
        required=False,
        initial=SOURCE,
        choices=[(SOURCE, "Only those that can still move"), ("", "Any authority"), *Authority.choices],
    )

    def service_filters(self) -> dict:
        data = self.cleaned_data
        return {
            "query": data["q"],
            "ou": data["ou"],
            "department": data["department"],
            "recipient_type": data["recipient_type"],
            "drift": {"yes": True, "no": False}.get(data["drift"]),
            "authority": None if data["authority"] in (SOURCE, None) else data["authority"],
        }


class CsvMembersForm(forms.Form):
    """A list of UPNs or addresses, one per line: pasted, or uploaded as a file. Its size is checked here (an
    upload by the size it declares; wave_add_from_csv counts what it reads, and the lines)."""

    text = forms.CharField(
        required=False,
        strip=False,
        label="UPNs or addresses, one per line",
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "ann.archer@corp.example.com"}),
    )
    file = forms.FileField(required=False, label="or upload a CSV file")

    def clean(self):
        cleaned = super().clean()
        upload, text = cleaned.get("file"), cleaned.get("text") or ""
        too_large = upload.size if upload else len(text.encode())
        if too_large > settings.WAVE_CSV_MAX_BYTES:
            raise forms.ValidationError(csv_too_large())
        if not upload and not text.strip():
            raise forms.ValidationError("Paste the list or choose a file.")
        return cleaned

    def lines(self) -> Iterable[str] | str:
        """What wave_add_from_csv reads: the uploaded file's lines as they are read (bounded), else the text."""
        upload = self.cleaned_data.get("file")
        if upload:
            return upload_lines(upload, max_bytes=settings.WAVE_CSV_MAX_BYTES, too_large=csv_too_large())
        return self.cleaned_data["text"]


class ReasonForm(forms.Form):
    """An optional reason that goes into the audit log."""

    reason = forms.CharField(required=False, max_length=REASON_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 2}))


class RequiredReasonForm(forms.Form):
    """A reason the audit log (and the operator) must have."""

    reason = forms.CharField(max_length=REASON_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 2}))


class ApproveForm(forms.Form):
    """An approval, acknowledging the frozen report's warnings when it has any."""

    acknowledge_warnings = forms.BooleanField(required=False, label="I have read the pre-flight warnings")
    reason = forms.CharField(
        required=False,
        max_length=REASON_MAX_LENGTH,
        label="Comment (optional)",
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class WaveSettingsForm(WaveCreateForm):
    """A draft's settings, changed: everything the create form takes but the direction (a wave moving the other way
    is another wave)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["direction"]
