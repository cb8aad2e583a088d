"""View guards built on portal.roles, so every page asks the same question the services ask."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

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
