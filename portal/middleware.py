"""Request-scoped plumbing."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control, patch_vary_headers

from portal.correlation import correlation_scope, sanitize

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
