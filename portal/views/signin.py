"""Signing in and out, the audited password change, and the administrators' page of sign-in locks."""

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminPasswordChangeForm
from django.contrib.auth import views as auth_views
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.entra_signin import entra_signin_available
from portal.forms import ReasonForm, ThrottledAuthenticationForm
from portal.roles import Action
from portal.signin import (
    SignInLockError,
    client_address,
    password_changed,
    signed_out,
    signin_lock_list,
    signin_lock_release,
)


class SignInView(auth_views.LoginView):
    """Django's sign-in page, offering Entra ID when it is set up and the local form unless it is switched off."""

    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["entra_available"] = entra_signin_available()
        context["local_signin_enabled"] = settings.LOCAL_SIGNIN_ENABLED
        return context


login_view = SignInView.as_view()


class SignOutView(auth_views.LogoutView):
    """Django's sign-out (POST only), with an audit event written while the user is still known."""

    def post(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            with transaction.atomic():
                signed_out(user=request.user, address=client_address(request))
        return super().post(request, *args, **kwargs)


class AuditedPasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change; the new password and its audit event commit together."""

    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            password_changed(user=form.user, address=client_address(self.request))
        return response


def admin_password_change(request: HttpRequest) -> HttpResponse:
    """The admin site's "Change password", as the admin site builds it, but audited."""
    request.current_app = admin.site.name
    view = AuditedPasswordChangeView.as_view(
        form_class=AdminPasswordChangeForm,
        success_url=reverse("admin:password_change_done", current_app=admin.site.name),
        extra_context=admin.site.each_context(request),
    )
    return view(request)


@action_required(Action.PORTAL_CONFIGURE)
def signin_locks_view(request: HttpRequest) -> HttpResponse:
    context = {
        "throttles": signin_lock_list(user=request.user)[:500],
        "now": timezone.now(),
        "username_limit": settings.SIGNIN_USERNAME_FAILURE_LIMIT,
        "address_limit": settings.SIGNIN_ADDRESS_FAILURE_LIMIT,
        "window": settings.SIGNIN_FAILURE_WINDOW_MINUTES,
        "lockout": settings.SIGNIN_LOCKOUT_MINUTES,
    }
    return render(request, "portal/signin_locks.html", context)


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def signin_lock_release_view(request: HttpRequest, throttle_id: int) -> HttpResponse:
    form = ReasonForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the lock is released.")
        return redirect("signin_locks")
    try:
        row = signin_lock_release(actor=request.user, throttle_id=throttle_id, reason=form.cleaned_data["reason"])
    except SignInLockError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Released the sign-in lock on {row.get_kind_display().lower()} {row.key}.")
    return redirect("signin_locks")
