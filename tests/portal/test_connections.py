"""The administrators' connection settings page and its Test connection, against the session's real slapd: what it
shows (never a secret), what a test reports when it works and when it does not, who may use it, and its audit."""

import re

import ldap3
import pytest
from django.test import Client

from portal.models import AuditEvent
from portal.roles import Role
from writeback.directory import DirectoryConfig
from writeback.directory.check import probe

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client, make_user):
    user = make_user("root", Role.ADMIN)
    client.force_login(user)
    return user


def test_the_page_shows_the_configuration_and_no_secret(client, admin, directory, settings, tmp_path):
    secret = tmp_path / "client-secret"
    secret.write_text("s3cr3t-value-never-shown")
    settings.ENTRA_CLIENT_SECRET_FILE = str(secret)
    page = client.get("/settings/connections/").content.decode()
    assert directory.url in page and directory.bind_dn in page and directory.base_dn in page
    assert 'href="/settings/connections/"' in page  # in the navigation
    assert "s3cr3t-value-never-shown" not in page and directory.password not in page
    assert 'action="/settings/connections/test/"' in page and 'hx-post="/settings/connections/test/"' in page


def test_test_connection_without_javascript_reports_the_server_the_mark_and_one_user(client, admin, directory):
    """The root DSE names the server (AD's dsServiceName, MS-ADTS 3.1.1.3.2.3; the sandbox's own), its change mark
    (AD's highestCommittedUSN; the sandbox's contextCSN) and its naming contexts."""
    response = client.post("/settings/connections/test/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<html" in page and 'data-testid="connection-ok"' in page, page
    assert directory.server_dn in page and "contextCSN" in page
    assert "dc=corp,dc=example,dc=com" in page.lower()
    assert re.search(r"<dt>One user</dt><dd><code>cn=[^<]+ou=corp,dc=corp,dc=example,dc=com</code>", page, re.I)
    event = AuditEvent.objects.get(action="writeback.directory.connection_tested")
    assert event.actor == admin and event.after["result"] == "ok" and event.after["server"] == directory.server_dn
    assert directory.password not in str(event.after)


def test_with_htmx_only_the_result_partial_comes_back(client, admin, directory):
    response = client.post("/settings/connections/test/", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert body.lstrip().startswith('<div id="connection-test-result"') and "Connected." in body


def test_a_failed_bind_is_reported_with_the_servers_reason_and_audited(client, admin, directory, settings, tmp_path):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password")
    settings.LDAP_PASSWORD_FILE = str(wrong)
    page = client.post("/settings/connections/test/").content.decode()
    assert 'data-testid="connection-error"' in page and "Failed to connect and bind" in page
    assert "invalidCredentials (49)" in page and "not-the-password" not in page
    event = AuditEvent.objects.get(action="writeback.directory.connection_tested")
    assert event.after["result"] == "failed" and "invalidCredentials" in event.reason


def test_an_unreachable_directory_is_reported_not_raised(client, admin, settings):
    settings.LDAP_URL = "ldap://127.0.0.1:9"
    page = client.post("/settings/connections/test/").content.decode()
    assert 'data-testid="connection-error"' in page and "unreachable" in page


@pytest.mark.parametrize("role", [role for role in Role if role is not Role.ADMIN])
def test_only_an_administrator_may_see_or_test(client, make_user, role):
    client.force_login(make_user("someone", role))
    assert client.get("/settings/connections/").status_code == 403
    assert client.post("/settings/connections/test/").status_code == 403
    assert not AuditEvent.objects.filter(action="writeback.directory.connection_tested").exists()


def test_the_test_needs_post_and_a_csrf_token(admin, directory):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin)
    assert strict.get("/settings/connections/test/").status_code == 405
    assert strict.post("/settings/connections/test/").status_code == 403
    assert not AuditEvent.objects.filter(action="writeback.directory.connection_tested").exists()


def test_a_base_dn_without_users_says_so(directory):
    empty_ou = f"OU=No users here,{directory.base_dn}"
    with ldap3.Connection(directory.url, directory.bind_dn, directory.password, auto_bind=True) as connection:
        assert connection.add(empty_ou, ["top", "organizationalUnit"]), connection.result
        try:
            config = DirectoryConfig(
                url=directory.url, bind_dn=directory.bind_dn, password_file=str(directory.password_file),
                base_dn=empty_ou,
            )  # fmt: skip
            report = probe(config)
        finally:
            connection.delete(empty_ou)
    assert not report.ok and report.server == directory.server_dn
    assert report.error.startswith("No user with an Exchange recipient type was found below OU=No users here")
