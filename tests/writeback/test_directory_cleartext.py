"""Plain LDAP binds send the service account's password in clear: refused to any host but this machine unless
LDAP_ALLOW_CLEARTEXT (or DJANGO_DEBUG) allows them, and reported by `manage.py check --deploy` (writeback.E002)."""

import secrets

import pytest

from tests.portal.test_settings import PRODUCTION, _run
from writeback.directory import DirectoryConfig, DirectoryPermanent, DirectoryRetryable, ping
from writeback.directory.connection import check_cleartext_bind, cleartext_refusal


def _config(directory, url: str, **overrides) -> DirectoryConfig:
    values = {
        "url": url,
        "bind_dn": directory.bind_dn,
        "password_file": str(directory.password_file),
        "base_dn": directory.base_dn,
        "timeout": 1.0,
    }
    return DirectoryConfig(**{**values, **overrides})


@pytest.mark.parametrize("host", ["dc1.corp.example.com", "192.0.2.10", "[2001:db8::10]", "localhost.corp.example"])
def test_plain_ldap_to_another_host_is_refused_before_anything_is_sent(directory, settings, host):
    settings.DEBUG, settings.LDAP_ALLOW_CLEARTEXT = False, False
    # The password file does not exist: the refusal comes before it would be read, let alone sent.
    config = _config(directory, f"ldap://{host}:389", password_file="/nonexistent/ldap-password")
    with pytest.raises(DirectoryPermanent, match="unencrypted, so the portal refuses to bind"):
        ping(config)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "LOCALHOST", "[::1]"])
def test_plain_ldap_to_this_machine_stays_allowed(settings, host):
    settings.DEBUG, settings.LDAP_ALLOW_CLEARTEXT = False, False
    assert cleartext_refusal(f"ldap://{host}:389", "") == ""


def test_the_sandbox_directory_on_loopback_still_binds_with_debug_off(directory, settings):
    settings.DEBUG, settings.LDAP_ALLOW_CLEARTEXT = False, False
    assert directory.url.startswith("ldap://127.")
    ping(_config(directory, directory.url, timeout=2.0))


@pytest.mark.parametrize(
    ("url", "ca_file"),
    [("ldaps://dc1.corp.example.com", ""), ("ldap://dc1.corp.example.com", "/etc/ssl/corp-ca.pem")],
)
def test_tls_to_another_host_is_not_a_cleartext_bind(settings, url, ca_file):
    settings.DEBUG, settings.LDAP_ALLOW_CLEARTEXT = False, False
    assert cleartext_refusal(url, ca_file) == ""


@pytest.mark.parametrize("switch", ["LDAP_ALLOW_CLEARTEXT", "DEBUG"])
def test_the_setting_or_debug_lets_a_cleartext_bind_through_to_the_network(directory, settings, switch):
    settings.DEBUG, settings.LDAP_ALLOW_CLEARTEXT = False, False
    setattr(settings, switch, True)
    # Nothing listens there: the bind is attempted and fails as unreachable, not refused by policy.
    with pytest.raises(DirectoryRetryable):
        ping(_config(directory, "ldap://192.0.2.10:389"))


def test_the_check_reports_the_configured_cleartext_directory(settings):
    settings.LDAP_URL, settings.LDAP_CA_FILE, settings.LDAP_ALLOW_CLEARTEXT = "ldap://dc1.corp.example.com", "", False
    settings.DEBUG = True  # debug lets the bind through at run time, but a deployment is judged without it
    (error,) = check_cleartext_bind()
    assert error.id == "writeback.E002" and "dc1.corp.example.com" in error.msg
    settings.LDAP_ALLOW_CLEARTEXT = True
    assert check_cleartext_bind() == []
    settings.LDAP_ALLOW_CLEARTEXT, settings.LDAP_CA_FILE = False, "/etc/ssl/corp-ca.pem"
    assert check_cleartext_bind() == []


def test_check_deploy_fails_on_a_cleartext_directory_and_passes_when_it_is_allowed():
    env = PRODUCTION | {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "AUDIT_CHAIN_KEY": secrets.token_hex(32),
                        "LDAP_URL": "ldap://dc1.corp.example.com:389"}  # fmt: skip
    result = _run(env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "writeback.E002" in result.stderr + result.stdout
    result = _run(env | {"LDAP_ALLOW_CLEARTEXT": "true"}, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
