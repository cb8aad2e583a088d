"""Signing in with Entra ID: the start (off to the authorize page) and the redirect back (portal.entra_signin)."""

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET

from portal.entra_signin import (
    SignInRefused,
    entra_signin_available,
    pending_next,
    refusal_audited,
    signin_begin,
    signin_complete,
)
from portal.signin import client_address

_NOT_SET_UP = SignInRefused(
    "Sign-in with Entra ID is not set up on this portal.", outcome="Entra sign-in is not configured"
)


def _safe_next(request: HttpRequest, target: str) -> str:
    allowed = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if target and allowed else ""


def _refused(request: HttpRequest, refused: SignInRefused, status: int = 400) -> HttpResponse:
    template = "registration/no_access.html" if refused.no_access else "registration/entra_refused.html"
    context = {"message": refused.message, "entra_available": entra_signin_available()}
    return render(request, template, context, status=403 if refused.no_access else status)


@require_GET
def entra_signin_start(request: HttpRequest) -> HttpResponse:
    if not entra_signin_available():
        return _refused(request, _NOT_SET_UP, status=404)
    redirect_uri = request.build_absolute_uri(reverse("entra_signin_callback"))
    try:
        url = signin_begin(
            request.session, redirect_uri=redirect_uri, next_url=_safe_next(request, request.GET.get("next", ""))
        )
    except SignInRefused as refused:
        refusal_audited(refused, address=client_address(request))
        return _refused(request, refused, status=503)
    return redirect(url)


@require_GET
def entra_signin_callback(request: HttpRequest) -> HttpResponse:
    """Where Entra ID sends the browser back with a code (or an error); never trusted before msal and the checks."""
    if not entra_signin_available():
        return _refused(request, _NOT_SET_UP, status=404)
    next_url = pending_next(request.session)
    try:
        result = signin_complete(request.session, request.GET.dict(), address=client_address(request))
    except SignInRefused as refused:
        return _refused(request, refused)
    login(request, result.user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect(next_url or resolve_url(settings.LOGIN_REDIRECT_URL))
