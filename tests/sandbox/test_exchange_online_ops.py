"""Contract of the emulator as a service: throttling (exchange-facts §4.5), faults (§4.3), admin endpoint,
ready.json, persistence and process handling."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.exchange_online import ExchangeOnlineEmulator
from sandbox.exchange_online.faults import Faults

UPN = "jonas.nowak@corp.example.com"
REPO_ROOT = Path(__file__).resolve().parents[2]


def get(exo_invoke):
    return exo_invoke("Get-Mailbox", {"Identity": UPN})


# -- throttling ---------------------------------------------------------------------------------------


def test_successful_responses_carry_the_rate_limit_headers(exo_clean, exo_invoke):
    response = get(exo_invoke)
    assert response.status_code == 200
    assert response.headers["Rate-Limit-Limit"] == "30000"
    assert int(response.headers["Rate-Limit-Remaining"]) <= 29999
    dt.datetime.fromisoformat(response.headers["Rate-Limit-Reset"].replace("Z", "+00:00"))


def test_an_empty_bucket_answers_429_with_retry_after(exo_clean, exo_invoke):
    exo_clean.set_throttle(rate=0.01, burst=3)
    remaining = [get(exo_invoke).headers["Rate-Limit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    throttled = get(exo_invoke)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.headers["Rate-Limit-Limit"] == "3"
    assert throttled.headers["Rate-Limit-Remaining"] == "0"
    reset = dt.datetime.fromisoformat(throttled.headers["Rate-Limit-Reset"].replace("Z", "+00:00"))
    assert reset > dt.datetime.now(dt.UTC)
    error = throttled.json()["error"]
    assert error["code"] == "TooManyRequests" and error["details"][0]["message"].count("|") == 2
    assert exo_clean.counters()["throttled"] == 1


def test_buckets_are_per_client(exo_clean, exo_invoke):
    exo_clean.set_throttle(rate=0.01, burst=1)
    assert get(exo_invoke).status_code == 200
    assert get(exo_invoke).status_code == 429
    other = exo_clean.msal_app("certificate").acquire_token_for_client([exo_clean.scope])["access_token"]
    assert exo_invoke("Get-Mailbox", {"Identity": UPN}, token=other).status_code == 200


def test_the_bucket_refills_at_the_configured_rate(exo_clean, exo_invoke):
    exo_clean.set_throttle(rate=20, burst=1)
    assert get(exo_invoke).status_code == 200
    response = get(exo_invoke)
    if response.status_code == 429:
        time.sleep(0.1)
        response = get(exo_invoke)
    assert response.status_code == 200


def test_throttling_can_be_switched_off(exo_clean, exo_invoke):
    exo_clean.set_throttle(rate=None)
    response = get(exo_invoke)
    assert response.status_code == 200
    assert "Rate-Limit-Limit" not in response.headers


# -- faults -------------------------------------------------------------------------------------------


def test_latency_is_added(exo_clean, exo_invoke):
    exo_clean.set_faults(latency_ms=150)
    started = time.monotonic()
    assert get(exo_invoke).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_latency_can_be_limited_to_one_cmdlet():
    faults = Faults()
    faults.update({"latency_ms": 400, "latency_cmdlet": "Set-Mailbox"})
    assert faults.latency_for("set-mailbox") == 0.4 and faults.latency_for("Get-Mailbox") == 0.0
    faults.update({"latency_cmdlet": ""})
    assert faults.latency_for("Get-Mailbox") == 0.4


def test_next_n_requests_fail_with_the_chosen_status(exo_clean, exo_invoke):
    exo_clean.set_faults(fail_next=2, fail_status=500)
    first, second, third = get(exo_invoke), get(exo_invoke), get(exo_invoke)
    assert (first.status_code, second.status_code, third.status_code) == (500, 500, 200)
    assert first.json()["error"]["code"] == "InternalServerError"
    assert exo_clean.counters()["faults_injected"] == 2


def test_reset_zeroes_the_injected_fault_count(exo_clean, exo_invoke):
    """A reset is the emulator as it started, counters included, so one test's faults never show in the next."""
    exo_clean.set_faults(fail_next=1, fail_status=503)
    get(exo_invoke)
    assert exo_clean.counters()["faults_injected"] == 1
    exo_clean.reset()
    assert exo_clean.counters()["faults_injected"] == 0


def test_a_share_of_errors_is_repeatable_with_a_seed(exo_clean, exo_invoke):
    def run() -> list[int]:
        exo_clean.set_faults(error_rate=0.5, error_status=503, seed=7)
        return [get(exo_invoke).status_code for _ in range(20)]

    first = run()
    exo_clean.clear_faults()
    assert run() == first
    assert set(first) == {200, 503}


def test_error_after_apply_applies_the_change_then_fails_without_a_message(exo_clean, exo_invoke):
    exo_invoke("Set-Mailbox", {"Identity": UPN, "IsExchangeCloudManaged": True})
    exo_clean.set_faults(error_after_apply=1)
    response = exo_invoke("Set-Mailbox", {"Identity": UPN, "CustomAttribute5": "applied anyway"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["message"] == "" and error["details"][0]["message"] == ""
    assert exo_clean.get_mailbox(UPN)["CustomAttribute5"] == "applied anyway"
    assert exo_invoke("Set-Mailbox", {"Identity": UPN, "CustomAttribute5": "next"}).status_code == 200


def test_error_after_apply_does_not_hide_a_validation_error(exo_clean, exo_invoke):
    exo_clean.set_faults(error_after_apply=1)
    assert exo_invoke("Set-Mailbox", {"Identity": UPN, "CustomAttribute5": "x"}).status_code == 400  # write scope
    assert exo_clean.set_faults()["error_after_apply"] == 1


def test_replication_lag_hides_a_new_mailbox_for_a_while(exo_clean, exo_invoke):
    exo_clean.set_faults(replication_lag=300)
    exo_clean.create_mailbox(UserPrincipalName="fresh@corp.example.com")
    assert exo_invoke("Get-Mailbox", {"Identity": "fresh@corp.example.com"}).status_code == 404
    assert exo_invoke("Set-Mailbox", {"Identity": "fresh@corp.example.com", "CustomAttribute1": "x"}).status_code == 404
    assert get(exo_invoke).status_code == 200  # older objects are unaffected
    assert exo_clean.get_mailbox("fresh@corp.example.com") is not None  # it exists all the same
    exo_clean.set_faults(replication_lag=0)
    assert exo_invoke("Get-Mailbox", {"Identity": "fresh@corp.example.com"}).status_code == 200


def test_unknown_fault_is_refused(exo_clean):
    with pytest.raises(RuntimeError, match="unknown faults"):
        exo_clean.set_faults(meteor_strike=True)


# -- admin endpoint, counters, reset -------------------------------------------------------------------


def test_admin_endpoint_needs_the_admin_token(exo_clean):
    session = exo_clean.session()
    assert session.post(f"{exo_clean.base_url}/_emulator/reset", timeout=10).status_code == 401
    wrong = session.get(
        f"{exo_clean.base_url}/_emulator/counters", headers={"X-Emulator-Admin-Token": "guess"}, timeout=10
    )
    assert wrong.status_code == 401


def test_counters_count_requests_and_cmdlets(exo_clean, exo_invoke):
    get(exo_invoke)
    exo_invoke("Get-AcceptedDomain")
    counters = exo_clean.counters()
    assert counters["invoke_command"] == 2
    assert counters["by_cmdlet"] == {"Get-AcceptedDomain": 1, "Get-Mailbox": 1}
    assert counters["by_status"]["200"] == 2


def test_reset_puts_faults_throttle_settings_and_counters_back(exo_clean, exo_invoke):
    exo_clean.set_faults(fail_next=5)
    exo_clean.set_throttle(rate=1, burst=1)
    exo_clean.set_settings(proxy_cooldown=99)
    get(exo_invoke)
    exo_clean.reset()
    assert exo_clean.set_faults()["fail_next"] == 0
    assert exo_clean.set_throttle(rate=1000.0)["burst"] == 30000
    assert exo_clean.set_settings()["proxy_cooldown"] == 0
    assert exo_clean.counters()["invoke_command"] == 0


def test_admin_creates_reads_and_deletes_cloud_only_mailboxes(exo_clean, exo_invoke):
    created = exo_clean.create_mailbox(UserPrincipalName="pat.cloud@corp.example.com", DisplayName="Pat Cloud")
    assert created["IsDirSynced"] is False
    assert created["EmailAddresses"][0] == "SMTP:pat.cloud@corp.example.com"
    assert exo_invoke("Get-Mailbox", {"Identity": "pat.cloud"}).json()["value"][0]["DisplayName"] == "Pat Cloud"
    exo_clean.delete_mailbox("pat.cloud@corp.example.com")
    assert exo_clean.get_mailbox("pat.cloud@corp.example.com") is None


# -- ready.json, process, persistence -------------------------------------------------------------------


def test_ready_json_describes_everything_a_client_needs(exchange_online):
    info = json.loads((exchange_online.workdir / "ready.json").read_text())
    assert info["base_url"].startswith("https://127.0.0.1:")
    assert info["authority"] == f"{info['base_url']}/{info['tenant_id']}"
    assert info["tenant_domain"] == "corp.onmicrosoft.com"
    assert "corp.example.com" in info["accepted_domains"]
    assert Path(info["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert Path(info["clients"]["secret"]["client_secret_file"]).read_text().strip()
    assert Path(info["clients"]["no_permission"]["client_secret_file"]).exists()
    certificate = info["clients"]["certificate"]
    assert Path(certificate["private_key_file"]).exists() and Path(certificate["certificate_file"]).exists()
    assert len(certificate["thumbprint"]) == 40
    assert Path(info["admin_token_file"]).read_text().strip() == exchange_online.admin_token
    assert info["pid"] == exchange_online.pid
    assert info["identities"] and {"oid", "preferred_username", "name", "groups"} <= info["identities"][0].keys()


def test_state_and_credentials_survive_a_restart(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps({"mailboxes": [{"UserPrincipalName": "seeded@corp.example.com", "CustomAttribute1": "s"}]})
    )
    state = tmp_path / "state.json"
    workdir = tmp_path / "exo"
    with ExchangeOnlineEmulator.start(workdir=workdir, seed_file=seed, state_file=state) as first:
        token = first.msal_app("secret").acquire_token_for_client([first.scope])["access_token"]
        session = first.session()
        parameters = {"Identity": "seeded@corp.example.com", "CustomAttribute2": "kept"}
        body = {"CmdletInput": {"CmdletName": "Set-Mailbox", "Parameters": parameters}}
        assert session.post(first.exchange_url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
        identity = (
            first.tenant_id,
            first.client_id("secret"),
            first.client_secret(),
            first.clients["certificate"]["thumbprint"],
        )
    assert json.loads(state.read_text())["mailboxes"][0]["CustomAttribute2"] == "kept"
    with ExchangeOnlineEmulator.start(workdir=workdir, seed_file=seed, state_file=state) as second:
        assert second.get_mailbox("seeded@corp.example.com")["CustomAttribute2"] == "kept"
        again = (
            second.tenant_id,
            second.client_id("secret"),
            second.client_secret(),
            second.clients["certificate"]["thumbprint"],
        )
        assert again == identity
        # The old token is still good: the signing key survived the restart too.
        response = second.session().post(
            second.exchange_url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 200


def test_background_sync_ticks_on_its_interval(directory, tmp_path):
    with ExchangeOnlineEmulator.start(directory=directory, workdir=tmp_path / "exo", sync_interval=0.2) as emulator:
        first = emulator.counters()["sync_ticks"]
        deadline = time.monotonic() + 10
        while emulator.counters()["sync_ticks"] < first + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emulator.counters()["sync_ticks"] >= first + 2


def test_stop_ends_the_process_and_a_temp_workdir(directory):
    emulator = ExchangeOnlineEmulator.start()
    workdir = emulator.workdir
    emulator.stop()
    assert not emulator.is_running()
    assert not workdir.exists()
    emulator.stop()  # idempotent


def test_cli_refuses_half_a_directory_configuration(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox.exchange_online",
            "--workdir",
            str(tmp_path),
            "--ldap-url",
            "ldap://127.0.0.1:1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "go together" in result.stderr


def test_error_after_apply_covers_the_flip_answered_with_an_empty_terminating_error(exo_clean, exo_invoke):
    """exchange-facts §7.4 (and §4.3, §7.2): Set-Mailbox -IsExchangeCloudManaged was seen throwing a terminating
    error with an empty message while the change had been applied server-side; a re-read shows the flip."""
    exo_clean.set_faults(error_after_apply=1)
    response = exo_invoke("Set-Mailbox", {"Identity": UPN, "IsExchangeCloudManaged": True})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["message"] == "" and error["details"][0]["message"] == ""
    assert error["innererror"]["internalexception"]["message"] == ""
    assert get(exo_invoke).json()["value"][0]["IsExchangeCloudManaged"] is True


def test_replication_lag_hides_a_mailbox_just_written_from_identity_lookups(exo_clean, exo_invoke):
    """exchange-facts §4.3: retry a 404 that follows a recent write (the reference measured it after a creation;
    that a write hides the object the same way is a guess, fault replication_lag_after_write)."""
    other = "kenji.kowalski@corp.example.com"
    exo_invoke("Set-Mailbox", {"Identity": UPN, "IsExchangeCloudManaged": True})
    exo_clean.set_faults(replication_lag=300)
    assert get(exo_invoke).status_code == 404
    assert exo_invoke("Set-Mailbox", {"Identity": UPN, "CustomAttribute2": "y"}).status_code == 404
    listed = exo_invoke("Get-Mailbox", {"ResultSize": "Unlimited"}).json()["value"]
    assert UPN in {m["UserPrincipalName"] for m in listed}  # listings still show it
    assert exo_invoke("Get-Mailbox", {"Identity": other}).status_code == 200  # mailboxes not written are unaffected
    exo_clean.set_faults(replication_lag_after_write=False)
    assert get(exo_invoke).status_code == 200
    exo_clean.set_faults(replication_lag=0)
