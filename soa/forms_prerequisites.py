"""Forms of the readiness page's prerequisites. They check shapes only; soa.prerequisites enforces the rules."""

from django import forms

from soa.prerequisites import VERSION_PATTERN


class ConnectVersionForm(forms.Form):
    """The Entra Connect version an administrator read, and where."""

    version = forms.RegexField(
        regex=VERSION_PATTERN, max_length=64, label="Entra Connect version",
        error_messages={"invalid": "Enter a version number such as 2.5.76.0."},
        widget=forms.TextInput(attrs={"placeholder": "2.5.76.0", "autocomplete": "off"}),
    )  # fmt: skip
    seen_where = forms.CharField(
        max_length=300, label="Where it was read",
        widget=forms.TextInput(attrs={"placeholder": "SYNC01: Get-ADSyncGlobalSettings", "autocomplete": "off"}),
    )  # fmt: skip


class CanaryForm(forms.Form):
    """The canary of the Exchange role check, and the administrator's consent to its no-op write."""

    identity = forms.CharField(
        max_length=320, label="Canary mailbox (UPN or primary address)",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )  # fmt: skip
    confirm = forms.BooleanField(
        label="Run Set-Mailbox -IsExchangeCloudManaged on this mailbox with the value it has, then read it back",
        error_messages={"required": "Tick the box to confirm the no-op Set-Mailbox on this mailbox."},
    )
