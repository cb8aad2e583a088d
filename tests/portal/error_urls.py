"""The portal's URL map plus a page that fails, for the 500 page's tests (tests/portal/test_error_pages.py)."""

from django.urls import path

from portal.urls import handler403, handler404, handler500  # noqa: F401  (Django reads them from the URLconf)
from portal.urls import urlpatterns as portal_urlpatterns


def fails(request):
    raise RuntimeError("a bug in a page")


urlpatterns = [path("fails/", fails), *portal_urlpatterns]
