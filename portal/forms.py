"""Forms of the portal shell."""

from django import forms
from django.contrib.auth import get_user_model

from portal.limits import REASON_MAX_LENGTH, SCOPES_MAX_LENGTH
from portal.roles import Role


class AuditFilterForm(forms.Form):
    """Filters of the audit browser and its exports; every field is optional."""

    actor = forms.CharField(required=False, max_length=150, label="Actor")
    action = forms.CharField(required=False, max_length=100, label="Action starts with")
    object = forms.CharField(required=False, max_length=255, label="Object id or text")
    correlation_id = forms.CharField(required=False, max_length=64, label="Correlation id")
    since = forms.DateTimeField(
        required=False, label="From (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, label="Until (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("since") and cleaned.get("until") and cleaned["since"] > cleaned["until"]:
            raise forms.ValidationError("'From' must be before 'Until'.")
        return cleaned


class RoleAssignForm(forms.Form):
    """Grant a role to a user, tenant-wide or limited to OU subtrees (one DN per line)."""

    user = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True).order_by("username"))
    role = forms.ChoiceField(choices=[(role.value, role.value) for role in Role])
    tenant_wide = forms.BooleanField(required=False, label="Tenant-wide (every OU)")
    scopes = forms.CharField(
        required=False,
        max_length=SCOPES_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "OU=Sales,OU=Corp,DC=corp,DC=example,DC=com"}),
        label="OU scopes, one DN per line",
    )
    reason = forms.CharField(max_length=REASON_MAX_LENGTH, label="Reason")

    def clean_scopes(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["scopes"].splitlines() if line.strip()]


class ReasonForm(forms.Form):
    """A confirmation that must say why."""

    reason = forms.CharField(max_length=REASON_MAX_LENGTH, label="Reason")
