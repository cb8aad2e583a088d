"""Request-scoped plumbing."""

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control, patch_vary_headers

from portal.audit import audit_record
from portal.correlation import correlation_scope, sanitize
from portal.roles import Role, user_roles

REQUEST_ID_HEADER = "X-Request-ID"


class RequestIdMiddleware:
    """Gives every request a correlation id (the client's X-Request-ID when well formed) and echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = sanitize(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        with correlation_scope(request_id):
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


class SecurityHeadersMiddleware:
    """Adds the Content-Security-Policy and Permissions-Policy headers, and keeps signed-in pages out of caches.

    The policy (CONTENT_SECURITY_POLICY) allows scripts and styles from the portal's own origin only: no inline
    script, event-handler attribute or ``style`` attribute runs. Pages that need another policy set their own header,
    which is left alone. A signed-in page can show what only that user may see, so it gets ``no-store``: neither the
    browser (back button after sign-out, a shared machine) nor a proxy keeps a copy. Sits after the authentication
    middleware, so static files (served before it) stay cacheable.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # Django's debug error pages are styled and scripted inline; with DEBUG off (always in production) they
        # are never sent, and the portal's own error pages get the policy like any other.
        debug_error_page = settings.DEBUG and response.status_code >= 400
        if settings.CONTENT_SECURITY_POLICY and not debug_error_page:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        if settings.PERMISSIONS_POLICY:
            response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            patch_cache_control(response, no_store=True, private=True)
        return response


class HtmxVaryMiddleware:
    """Marks every answer as varying with the ``HX-Request`` header.

    The same URL answers an htmx request with a fragment and a plain one with the whole page (STYLE: only the
    template name depends on ``request.htmx``). Without ``Vary``, a cache may hand the fragment back for a plain
    request: Chromium's back button did, showing a bare, unstyled list after a live search. Every response gets it,
    not only those of views that branch today, so a new view cannot forget it; static files are served before this
    middleware runs and keep their own caching.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        patch_vary_headers(response, ("HX-Request",))
        return response


# The POSTs an auditor sends as an auditor: signing in and out, and asking for a verification of the chain (a
# read-only job; its request is recorded). The admin site is not an auditor's (no auditor is staff).
AUDITOR_POSTS = frozenset({"login", "logout", "audit_verify"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DENIED_ACTION = "portal.request.denied"
AUDITOR_REASON = (
    "The auditor role reads everything and changes nothing: this action is refused for it, whatever the page. "
    "Ask someone holding the role that makes this change."
)


class ReadOnlyAuditorMiddleware:
    """Refuse with 403 every state-changing request an auditor sends, except AUDITOR_POSTS.

    Each view checks its own role too; this answers the same everywhere, before any view runs, so a form added
    tomorrow whose view forgets a check (or answers a refusal as a 200 card, a redirect or a 404) still cannot be
    used by an auditor. An auditor holds no other role (portal.roles.INCOMPATIBLE_ROLES), so nothing is lost.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> None:
        if request.method in SAFE_METHODS or not request.user.is_authenticated:
            return None
        match = request.resolver_match
        if match is not None and match.url_name in AUDITOR_POSTS:
            return None
        if Role.AUDITOR.value in user_roles(request.user):
            # A crafted request is what the log must keep: recorded in a transaction of its own, then refused.
            with transaction.atomic():
                audit_record(
                    actor=request.user, action=DENIED_ACTION, object_type="url", object_id=request.path[:255],
                    reason=AUDITOR_REASON,
                    after={"method": request.method, "url_name": match.view_name if match is not None else None},
                )  # fmt: skip
            raise PermissionDenied(AUDITOR_REASON)
        return None
