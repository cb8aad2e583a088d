"""The administrators' connection settings: what the portal is configured to reach (never a secret), and a
"Test connection" that binds to the directory, reads its root DSE and one user, and reports what it found."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from portal.decorators import action_required
from portal.roles import Action
from writeback.directory import DirectoryConfig
from writeback.directory.check import directory_connection_test


def _file_state(path: str) -> str:
    # Where a secret lives is configuration an administrator needs; what it holds is never shown.
    return f"read from {path}" if path else "not set"


def _context(report=None) -> dict:
    directory = DirectoryConfig.from_settings()
    if settings.ENTRA_CERTIFICATE_KEY_FILE:
        credential = f"certificate, private key {_file_state(settings.ENTRA_CERTIFICATE_KEY_FILE)}"
    else:
        credential = f"client secret {_file_state(settings.ENTRA_CLIENT_SECRET_FILE)}"
    return {
        "directory": [
            ("URL", directory.url or "not set"),
            ("Bind DN", directory.bind_dn or "not set"),
            ("Password", _file_state(directory.password_file)),
            ("Base DN", directory.base_dn or "not set"),
            ("CA file", directory.ca_file or "none (the system's trust store for ldaps://)"),
            ("Timeout", f"{directory.timeout:g} s"),
        ],
        "exchange": [
            ("Cloud", settings.EXO_CLOUD),
            ("Tenant", settings.EXO_TENANT or "not set"),
            ("Exchange admin API", settings.EXO_BASE_URL),
            ("Microsoft Graph", settings.GRAPH_BASE_URL),
            ("Authority", settings.ENTRA_AUTHORITY),
            ("Application (client) ID", settings.ENTRA_CLIENT_ID or "not set"),
            ("Credential", credential),
        ],
        "report": report,
    }


@action_required(Action.PORTAL_CONFIGURE)
def connections_view(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/connections.html", _context())


@require_POST
@action_required(Action.PORTAL_CONFIGURE)
def connection_test_view(request: HttpRequest) -> HttpResponse:
    report = directory_connection_test(actor=request.user)
    template = "portal/connections.html#connection-test-result" if request.htmx else "portal/connections.html"
    return render(request, template, _context(report))
