"""Forms of the portal shell."""

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.forms.forms import NON_FIELD_ERRORS

from portal.limits import REASON_MAX_LENGTH, SCOPES_MAX_LENGTH
from portal.roles import Role
from portal.signin import (
    LOCAL_DISABLED_MESSAGE,
    LOCKED_MESSAGE,
    Attempt,
    client_address,
    local_signin_refused,
    signin_failed,
    signin_locked,
    signin_refused_here,
    signin_succeeded,
)


class AuditFilterForm(forms.Form):
    """Filters of the audit browser and its exports; every field is optional."""

    actor = forms.CharField(required=False, max_length=150, label="Actor")
    action = forms.CharField(required=False, max_length=100, label="Action starts with")
    object = forms.CharField(required=False, max_length=255, label="Object id or text")
    correlation_id = forms.CharField(required=False, max_length=64, label="Correlation id")
    mailbox = forms.CharField(required=False, max_length=320, label="Mailbox (name, UPN or address)")
    wave = forms.IntegerField(required=False, min_value=1, max_value=2**31 - 1, label="Wave number")
    since = forms.DateTimeField(
        required=False, label="From (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, label="Until (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    hide_audit = forms.BooleanField(required=False, label="Hide the log's own exports and verifications")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("since") and cleaned.get("until") and cleaned["since"] > cleaned["until"]:
            raise forms.ValidationError("'From' must be before 'Until'.")
        return cleaned


class RoleScopeFields(forms.Form):
    """A role, where it applies (tenant-wide or OU subtrees, one DN per line) and why: what a person's assignment
    and a group's mapping both ask for, after the fields naming who gets it."""

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


class RoleAssignForm(RoleScopeFields):
    """Grant a role to a user, tenant-wide or limited to OU subtrees (one DN per line)."""

    field_order = ["user"]
    user = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True).order_by("username"))


class ReasonForm(forms.Form):
    """A confirmation that must say why."""

    reason = forms.CharField(max_length=REASON_MAX_LENGTH, label="Reason")


class ThrottledLoginMixin:
    """Sign-in through portal.signin: a locked name or address is refused before its password is checked, every
    failure counts towards a lock, and every outcome is audited. Mixed into Django's authentication forms."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is None or not password:
            return super().clean()
        attempt = Attempt(username=username, address=client_address(self.request))
        if not settings.LOCAL_SIGNIN_ENABLED:
            local_signin_refused(attempt)
            raise forms.ValidationError(LOCAL_DISABLED_MESSAGE, code="local_disabled")
        if signin_locked(attempt):
            signin_failed(attempt, refused_while_locked=True)
            raise forms.ValidationError(LOCKED_MESSAGE, code="locked")
        try:
            cleaned = super().clean()
        except forms.ValidationError as exc:
            if self.user_cache is None:
                if signin_failed(attempt):
                    raise forms.ValidationError(LOCKED_MESSAGE, code="locked") from None
            else:  # right password, but this page does not admit the account (inactive, or not staff)
                signin_refused_here(user=self.user_cache, attempt=attempt, message=" ".join(exc.messages))
            raise
        signin_succeeded(user=self.user_cache, attempt=attempt)
        return cleaned

    @property
    def locked(self) -> bool:
        return self.has_error(NON_FIELD_ERRORS, "locked") or self.has_error(NON_FIELD_ERRORS, "local_disabled")


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    """The portal's sign-in form."""


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The sign-in form of /django-admin/ (which django-rq's dashboard is part of)."""


class GroupMappingForm(RoleScopeFields):
    """Map an Entra ID group (by object id) to a portal role, tenant-wide or limited to OU subtrees."""

    field_order = ["group_id", "display_name"]
    group_id = forms.CharField(
        max_length=64,
        label="Group object id",
        widget=forms.TextInput(attrs={"placeholder": "0f8fad5b-d9cb-469f-a165-70867728950e"}),
    )
    display_name = forms.CharField(max_length=256, label="Group display name")
