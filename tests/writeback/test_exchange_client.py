"""The Exchange Online client against the emulator over real HTTPS, with msal doing real token requests.

Nothing here patches msal or requests: throttling, faults and errors come from the emulator itself.
"""

import logging

import pytest

from tests.exchange_fixtures import RecordingSleep, exchange_config
from writeback.exchange import (
    ExchangeOnlineClient,
    ExchangeOnlineError,
    ExoAuthError,
    ExoInvalidParameter,
    ExoNotFound,
    ExoThrottled,
    ExoTransient,
    ExoWriteScope,
)


@pytest.fixture
def sleeps():
    return RecordingSleep()


@pytest.fixture
def client(exo_clean, sleeps):
    return ExchangeOnlineClient(exchange_config(exo_clean), sleep=sleeps)


@pytest.fixture
def synced(exo_clean):
    """A dir-synced mailbox of the emulator, as its raw record."""
    return next(m for m in exo_clean.mailboxes() if m["IsDirSynced"] and m["RecipientTypeDetails"] == "UserMailbox")


def test_secret_credential_reads_a_mailbox_by_upn(client, synced):
    mailbox = client.get_mailbox(synced["UserPrincipalName"])
    assert mailbox["ExternalDirectoryObjectId"] == synced["ExternalDirectoryObjectId"]


@pytest.mark.parametrize("with_certificate_file", [False, True])
def test_certificate_credential_works_with_thumbprint_or_public_certificate(exo_clean, synced, with_certificate_file):
    overrides = (
        {"certificate_file": exo_clean.clients["certificate"]["certificate_file"]} if with_certificate_file else {}
    )
    client = ExchangeOnlineClient(exchange_config(exo_clean, "certificate", **overrides))
    assert client.get_mailbox(synced["UserPrincipalName"])["UserPrincipalName"] == synced["UserPrincipalName"]


def test_token_is_cached_between_calls(client, exo_clean, synced):
    before = exo_clean.counters()["tokens_issued"]
    for _ in range(3):
        client.get_mailbox(synced["UserPrincipalName"])
    assert exo_clean.counters()["tokens_issued"] == before + 1


def test_a_revoked_token_is_replaced_once_and_the_call_goes_through(client, exo_clean, synced):
    upn = synced["UserPrincipalName"]
    client.get_mailbox(upn)
    issued = exo_clean.counters()["tokens_issued"]
    assert exo_clean.revoke_tokens() >= 1  # the client's cached token is now refused by Exchange
    assert client.get_mailbox(upn)["UserPrincipalName"] == upn
    counters = exo_clean.counters()
    assert counters["by_status"].get("401") == 1  # one refusal, then the fresh token was accepted
    assert counters["tokens_issued"] == issued + 1
    client.get_mailbox(upn)  # and the fresh token is the one cached from then on
    assert exo_clean.counters()["tokens_issued"] == issued + 1


def test_wrong_secret_gives_a_clear_auth_error(exo_clean, tmp_path):
    bad = tmp_path / "secret"
    bad.write_text("not-the-secret")
    client = ExchangeOnlineClient(exchange_config(exo_clean, client_secret_file=str(bad)))
    with pytest.raises(ExoAuthError, match="invalid_client: AADSTS7000215") as info:
        client.get_accepted_domains()
    assert "not-the-secret" not in str(info.value)


def test_missing_secret_file_is_named(exo_clean, tmp_path):
    client = ExchangeOnlineClient(exchange_config(exo_clean, client_secret_file=str(tmp_path / "absent")))
    with pytest.raises(ExoAuthError, match="Cannot read the client secret file"):
        client.get_accepted_domains()


def test_app_without_exchange_permission_is_refused(exo_clean):
    client = ExchangeOnlineClient(exchange_config(exo_clean, "no_permission"))
    with pytest.raises(ExoAuthError) as info:
        client.get_accepted_domains()
    assert info.value.status in (401, 403)


def test_iter_mailboxes_follows_next_links_to_the_last_page(client, exo_clean):
    expected = {m["ExternalDirectoryObjectId"] for m in exo_clean.mailboxes() if m["IsDirSynced"]}
    seen = [m["ExternalDirectoryObjectId"] for m in client.iter_mailboxes(filter="IsDirSynced -eq 'True'", page_size=7)]
    assert len(seen) == len(set(seen)) == len(expected) > 7
    assert set(seen) == expected
    assert exo_clean.counters()["by_cmdlet"]["Get-Mailbox"] >= len(expected) // 7 + 1


def test_not_found_is_typed(client):
    with pytest.raises(ExoNotFound) as info:
        client.get_mailbox("nobody@corp.example.com")
    assert info.value.exception_type.endswith("ManagementObjectNotFoundException")
    assert "nobody@corp.example.com" in str(info.value)


def test_write_scope_refusal_for_a_mailbox_still_mastered_on_prem(client, synced):
    with pytest.raises(ExoWriteScope, match="synchronized from your on-premises"):
        client.set_mailbox(synced["UserPrincipalName"], CustomAttribute3="cloud value")


def test_flip_then_edit_with_verification(client, synced):
    upn = synced["UserPrincipalName"]
    flipped = client.set_mailbox(upn, IsExchangeCloudManaged=True, verify=True)
    assert flipped.changed and flipped.mailbox["IsExchangeCloudManaged"] is True
    edited = client.set_mailbox(upn, CustomAttribute3="cloud value", verify=True)
    assert edited.mailbox["CustomAttribute3"] == "cloud value"
    again = client.set_mailbox(upn, CustomAttribute3="cloud value")
    assert not again.changed
    assert any("no settings of" in warning for warning in again.warnings)


def test_email_addresses_as_add_remove_hashtable(client, synced, exo_clean):
    upn = synced["UserPrincipalName"]
    client.set_mailbox(upn, IsExchangeCloudManaged=True)
    alias = f"extra.{synced['Alias']}@corp.example.com"
    client.set_mailbox(upn, EmailAddresses={"Add": [f"smtp:{alias}"]}, verify=True)
    assert f"smtp:{alias}" in exo_clean.get_mailbox(upn)["EmailAddresses"]
    client.set_mailbox(upn, EmailAddresses={"Remove": [f"smtp:{alias}"]}, verify=True)
    assert f"smtp:{alias}" not in exo_clean.get_mailbox(upn)["EmailAddresses"]


def test_invalid_address_is_an_invalid_parameter_with_exchange_details(client, synced):
    upn = synced["UserPrincipalName"]
    client.set_mailbox(upn, IsExchangeCloudManaged=True)
    with pytest.raises(ExoInvalidParameter) as info:
        client.set_mailbox(upn, EmailAddresses={"Add": ["smtp:not an address"]})
    assert info.value.status == 400 and info.value.ex_code and info.value.exception_type


def test_unknown_parameter_is_refused_before_any_call(client, exo_clean):
    with pytest.raises(ValueError, match="does not handle DisplayName"):
        client.set_mailbox("x@corp.example.com", DisplayName="New name")
    assert exo_clean.counters()["invoke_command"] == 0


def test_throttling_honours_retry_after(exo_clean, sleeps, synced):
    exo_clean.set_throttle(rate=1, burst=2)
    # Unpaced, the client spends the budget and collects 429s.
    client = ExchangeOnlineClient(exchange_config(exo_clean, pace=False), sleep=sleeps)
    for _ in range(4):
        client.get_mailbox(synced["UserPrincipalName"])
    assert exo_clean.counters()["throttled"] >= 1
    assert sleeps.calls and all(seconds >= 0.5 for seconds in sleeps.calls)


def test_throttling_beyond_the_attempt_budget_raises_throttled(exo_clean, synced):
    exo_clean.set_throttle(rate=0.5, burst=1)
    config = exchange_config(exo_clean, max_attempts=1, pace=False)
    client = ExchangeOnlineClient(config, sleep=RecordingSleep())
    client.get_mailbox(synced["UserPrincipalName"])
    with pytest.raises(ExoThrottled) as info:
        client.get_mailbox(synced["UserPrincipalName"])
    assert info.value.retry_after is not None and info.value.retry_after > 0


def test_transient_failures_are_retried_with_backoff(client, exo_clean, sleeps, synced):
    exo_clean.set_faults(fail_next=2, fail_status=503)
    assert client.get_mailbox(synced["UserPrincipalName"])["UserPrincipalName"] == synced["UserPrincipalName"]
    assert len(sleeps.calls) == 2


def test_transient_failures_beyond_the_budget_raise(exo_clean, synced):
    exo_clean.set_faults(fail_next=10, fail_status=500)
    client = ExchangeOnlineClient(exchange_config(exo_clean, max_attempts=3), sleep=RecordingSleep())
    with pytest.raises(ExoTransient):
        client.get_mailbox(synced["UserPrincipalName"])
    assert exo_clean.counters()["by_status"]["500"] == 3


def test_error_after_applied_is_confirmed_by_reading_not_resent(client, exo_clean, synced):
    upn = synced["UserPrincipalName"]
    client.set_mailbox(upn, IsExchangeCloudManaged=True)
    sets_before = exo_clean.counters()["by_cmdlet"]["Set-Mailbox"]
    exo_clean.set_faults(error_after_apply=1)
    result = client.set_mailbox(upn, CustomAttribute5="applied despite the 500", verify=True)
    assert result.mailbox["CustomAttribute5"] == "applied despite the 500"
    # One Set-Mailbox that failed after applying, then reads only: the change was not sent twice.
    assert exo_clean.counters()["by_cmdlet"]["Set-Mailbox"] == sets_before + 1


def test_log_lines_carry_the_call_but_never_the_token(client, synced, caplog):
    with caplog.at_level(logging.INFO, logger="writeback.exchange"):
        client.get_mailbox(synced["UserPrincipalName"])
    token = client.tokens.token()
    lines = [record.getMessage() for record in caplog.records]
    assert any("Get-Mailbox" in line and "status=200" in line and "request_id=" in line for line in lines)
    assert not any(token in line or "Bearer" in line for line in lines)


def test_unknown_cmdlet_answered_with_nul_bytes_is_a_clear_error(client):
    # Exchange answers an unknown cmdlet with 403 and a body of NUL bytes labelled gzip (exchange-facts §4.4).
    with pytest.raises(ExchangeOnlineError, match="Get-Nothing") as info:
        client.invoke("Get-Nothing", {})
    assert not info.value.retryable
