"""Production settings: refuse to start without a secret, pass Django's deployment checks, log JSON."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "portal.settings",
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "soa.corp.example.com",
}


def test_check_deploy_is_clean_with_production_values(tmp_path):
    key_file = tmp_path / "audit-chain.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    values = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "AUDIT_CHAIN_KEY_FILE": str(key_file)}
    result = _run(PRODUCTION | values, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_missing_or_short_audit_chain_key():
    production = PRODUCTION | {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    result = _run(production, "manage.py", "check", "--deploy")
    assert result.returncode != 0
    assert "portal.E001" in result.stderr and "AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) is not set" in result.stderr
    result = _run(production | {"AUDIT_CHAIN_KEY": "short"}, "manage.py", "check", "--deploy")
    assert result.returncode != 0 and "portal.E002" in result.stderr


def test_check_deploy_warns_when_the_audit_head_is_published_nowhere():
    values = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "AUDIT_CHAIN_KEY": secrets.token_hex(32),
              "AUDIT_HEAD_FILE": "", "AUDIT_HEAD_SYSLOG": ""}  # fmt: skip
    result = _run(PRODUCTION | values, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0 and "portal.W001" in result.stderr


def test_debug_off_without_a_secret_key_refuses_to_start():
    result = _run(PRODUCTION, "manage.py", "check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required" in result.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text(secrets.token_urlsafe(50))
    probe = "import django; django.setup(); from django.conf import settings; print(len(settings.SECRET_KEY))"
    result = _run(PRODUCTION | {"DJANGO_SECRET_KEY_FILE": str(key_file)}, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(key_file.read_text()))


def test_json_log_format_emits_one_json_object_per_line():
    probe = (
        "import django, logging; django.setup(); "
        "from portal.correlation import correlation_scope\n"
        "with correlation_scope('req-12345678'): logging.getLogger('soa.test').warning('hello %s', 'world')"
    )
    result = _run({"DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true", "LOG_FORMAT": "json"},
                  "-c", probe)  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["message"] == "hello world"
    assert record["level"] == "WARNING" and record["logger"] == "soa.test"
    assert record["correlation_id"] == "req-12345678"


def test_cloud_managed_ceiling_defaults_to_the_ga_limit():
    """Microsoft's writeback GA (2026-08-03) allows 600,000 cloud-managed mailboxes per tenant; 200,000 was the
    preview's figure (exchange-facts §1.2, §1.10)."""
    env = {"DJANGO_SETTINGS_MODULE": "portal.settings", "DJANGO_DEBUG": "true"}
    code = "import django; django.setup(); from django.conf import settings; print(settings.WAVE_CLOUD_MANAGED_CEILING)"
    result = _run(env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "600000"
