"""Request-scoped plumbing."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

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
