"""Content-Security-Policy, Permissions-Policy, no-store on signed-in pages, and the cached health checks."""

import re
from pathlib import Path

import pytest

from portal.roles import Role
from sandbox.redis_server import RedisServer

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.strip() for part in policy.split(";") if part.strip()}


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/login/", "/django-admin/login/", "/", "/mailboxes/", "/roles/", "/healthz"])
def test_every_answer_carries_a_policy_without_inline_script(client, make_user, url):
    if "login" not in url:  # the sign-in pages send a signed-in user on
        client.force_login(make_user("root", Role.ADMIN))
    response = client.get(url)
    assert response.status_code == 200
    directives = _directives(response)
    assert directives["script-src"] == "script-src 'self'"
    assert directives["style-src"] == "style-src 'self'"
    assert directives["object-src"] == "object-src 'none'" and directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert "unsafe" not in response["Content-Security-Policy"]
    assert "camera=()" in response["Permissions-Policy"] and "geolocation=()" in response["Permissions-Policy"]


@pytest.mark.django_db
def test_the_job_dashboard_may_use_inline_styles_but_no_inline_script(client, make_user):
    client.force_login(make_user("root", Role.ADMIN))
    for url in ("/jobs/", "/jobs/queues/1/"):
        directives = _directives(client.get(url))
        assert directives["script-src"] == "script-src 'self'", url
        assert directives["style-src"] == "style-src 'self' 'unsafe-inline'", url


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/mailboxes/", "/audit/", "/roles/", "/settings/sign-in-locks/", "/jobs/"])
def test_signed_in_pages_are_never_stored(client, make_user, url):
    client.force_login(make_user("root", Role.ADMIN))
    cache_control = client.get(url)["Cache-Control"]
    assert "no-store" in cache_control and "private" in cache_control


@pytest.mark.django_db
def test_the_policy_can_be_replaced_or_switched_off_by_settings(client, settings):
    settings.CONTENT_SECURITY_POLICY = "default-src 'none'"
    assert client.get("/login/")["Content-Security-Policy"] == "default-src 'none'"
    settings.CONTENT_SECURITY_POLICY = ""
    assert "Content-Security-Policy" not in client.get("/login/")


def test_templates_hold_no_inline_script_handlers_or_styles():
    """The policy blocks these; one slipping into a template would be a page that silently stops working."""
    patterns = {
        "inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
        "on* handler": re.compile(r"\son[a-z]+\s*=", re.I),
        "javascript: URL": re.compile(r"javascript:", re.I),
        "style attribute": re.compile(r"\sstyle\s*=", re.I),
        "<style> element": re.compile(r"<style[\s>]", re.I),
        "hx-on handler": re.compile(r"\shx-on", re.I),
    }
    found = [
        f"{path.relative_to(TEMPLATES)}: {what}"
        for path in TEMPLATES.rglob("*.html")
        for what, pattern in patterns.items()
        if pattern.search(path.read_text())
    ]
    assert found == []


@pytest.mark.django_db
def test_healthz_reuses_its_checks_for_a_few_seconds(client, settings):
    """A real Redis stopped between two calls: within the cache time the second answer is the first one's."""
    settings.HEALTH_CACHE_SECONDS = 3600  # long enough that no machine is slow enough to see it expire
    with RedisServer.start() as server:
        settings.REDIS_URL = server.url
        first = client.get("/healthz")
        assert first.status_code == 200
    # The server is gone; the cached answer (with the same timings) is given without asking it.
    second = client.get("/healthz")
    assert second.status_code == 200 and second.json() == first.json()
    settings.HEALTH_CACHE_SECONDS = 0
    third = client.get("/healthz")
    assert third.status_code == 503 and third.json()["down"] == ["redis"]


@pytest.mark.django_db
def test_debugs_error_pages_keep_their_inline_styles_and_production_error_pages_get_the_policy(client, settings):
    assert "Content-Security-Policy" in client.get("/no-such-page/")
    settings.DEBUG = True
    assert "Content-Security-Policy" not in client.get("/no-such-page/")
    assert "Content-Security-Policy" in client.get("/login/")
