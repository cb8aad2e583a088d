"""The portal's own error pages (portal.urls' handler403, handler404 and handler500), in its layout with a way back.

403 and 404 are rendered like any page, with the navigation of the user's roles. The 500 page is rendered from the
template alone, without the request: its context processors read the database, which may be what failed.
"""

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.template import loader

from portal.roles import OutsideScope, scope_bases

logger = logging.getLogger(__name__)

# Sent when even the template cannot be rendered (a missing static manifest, a broken template): no tag, no lookup.
BARE_500 = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Something went wrong · SOA Portal</title>'
    "</head><body><h1>Something went wrong</h1><p>The portal could not answer this request. Nothing you asked for "
    'was half done: try again in a minute.</p><p><a href="/">Go to the dashboard</a></p></body></html>'
)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """403: the reason given with the refusal (``PermissionDenied("Your roles do not allow …")``), if any."""
    reason = str(exception) if exception is not None and str(exception) else ""
    return render(request, "403.html", {"reason": reason}, status=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404. For an object asked for by id (OutsideScope) the page says which part of the directory the user's roles
    cover, the same words whether the object exists outside it or not at all."""
    context = {"request_path": request.path}
    if isinstance(exception, OutsideScope):
        bases = scope_bases(request.user, exception.action)
        context.update({"noun": exception.noun, "tenant_wide": bases is None, "scope_bases": bases or []})
    return render(request, "404.html", context, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """500, from the template alone (no request, so no context processor and no database)."""
    try:
        html = loader.render_to_string("500.html", {"request_id": getattr(request, "request_id", "")})
    except Exception:
        logger.exception("The 500 page could not be rendered; sent the bare one")
        html = BARE_500
    return HttpResponseServerError(html)
