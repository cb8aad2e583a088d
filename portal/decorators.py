"""View guards built on portal.roles, so every page asks the same question the services ask."""

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from portal.roles import Action, may


def action_required(action: Action) -> Callable:
    """Let the view run only for a signed-in user holding a role that grants ``action``; 403 otherwise."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not may(request.user, action):
                raise PermissionDenied(f"Your roles do not allow {action.label}.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


READ_ONLY_REASON = (
    "The background job dashboard is read-only: it shows queues and jobs but does not empty, requeue, delete, stop "
    "or enqueue them, because those changes would leave no audit record. Retry failed work from the portal's own "
    "pages (a mailbox's writeback, a wave member)."
)


def read_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let only GET and HEAD through; refuse every other method with 403.

    Wraps django-rq's dashboard: its empty, requeue, delete, stop and enqueue controls act on Redis without an audit
    event, so the portal shows queues and jobs but changes them only through its own audited services.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return render(request, "403.html", {"reason": READ_ONLY_REASON}, status=403)
        return view(request, *args, **kwargs)

    return wrapped


def job_dashboard_policy(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer with CONTENT_SECURITY_POLICY_JOBS (django-rq's pages carry inline <style>; portal.settings says why)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if settings.CONTENT_SECURITY_POLICY_JOBS:
            response.headers["Content-Security-Policy"] = settings.CONTENT_SECURITY_POLICY_JOBS
        return response

    return wrapped
