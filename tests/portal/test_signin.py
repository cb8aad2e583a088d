"""Sign-in throttling and the audit events of signing in and out (portal.signin), over HTTP."""

import json
import re
from datetime import timedelta

import pytest
from django.test import Client, RequestFactory
from django.utils import timezone

from portal.models import AuditEvent, SignInThrottle
from portal.roles import Role
from portal.signin import LOCKED_MESSAGE, client_address
from tests.conftest import PASSWORD

WRONG = "Tr0ub4dor&3 not it"  # a wrong password that must never reach the audit log
NOT_MATCHED = "Your username and password did not match"


def _attempt(client: Client, username: str, password: str, address: str = "192.0.2.10", url: str = "/login/"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def _alert(response) -> str:
    match = re.search(r'<p class="error" role="alert">(.*?)</p>', response.content.decode(), re.S)
    return match.group(1).strip() if match else ""


def _hammer(client: Client, username: str, times: int = 30) -> list:
    # Each wrong password from its own address, so only the count against the name can lock.
    return [_attempt(client, username, WRONG, address=f"198.51.100.{i + 1}") for i in range(times)]


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


@pytest.mark.django_db
def test_thirty_wrong_passwords_lock_the_user_out_and_the_right_one_is_then_refused(client, make_user, settings):
    make_user("alice", Role.HELPDESK)
    responses = _hammer(client, "alice")
    limit = settings.SIGNIN_USERNAME_FAILURE_LIMIT
    assert [_alert(r) for r in responses[: limit - 1]] == [_alert(responses[0])] * (limit - 1)
    assert NOT_MATCHED in _alert(responses[0])
    assert all(_alert(r) == LOCKED_MESSAGE for r in responses[limit - 1 :])

    response = _attempt(client, "alice", PASSWORD, address="203.0.113.7")
    assert response.status_code == 200 and _alert(response) == LOCKED_MESSAGE
    assert not _signed_in(client)
    # Another letter case is the same name to the throttle.
    assert _alert(_attempt(client, "ALICE", PASSWORD, address="203.0.113.8")) == LOCKED_MESSAGE

    assert len(_events("portal.signin.locked_out")) == 1
    failures = _events("portal.signin.failed")
    assert len(failures) == 32
    assert sum(e.after["outcome"] == "refused: locked out" for e in failures) == 32 - limit


@pytest.mark.django_db
def test_fewer_failures_than_the_limit_leave_the_right_password_working(client, make_user, settings):
    make_user("alice", Role.HELPDESK)
    _hammer(client, "alice", times=settings.SIGNIN_USERNAME_FAILURE_LIMIT - 1)
    response = _attempt(client, "alice", PASSWORD)
    assert response.status_code == 302 and _signed_in(client)
    # Success clears the name's count: the next mistakes start from zero.
    assert not SignInThrottle.objects.filter(kind="username", key="alice").exists()


@pytest.mark.django_db
def test_the_lock_out_looks_the_same_for_an_existing_and_an_unknown_user(make_user):
    make_user("alice", Role.HELPDESK)
    existing, unknown = Client(), Client()
    seen = {}
    for name, client in (("alice", existing), ("nobody-by-this-name", unknown)):
        responses = _hammer(client, name)
        right = _attempt(client, name, PASSWORD, address="203.0.113.9")
        seen[name] = [(r.status_code, _page_text(r, name)) for r in [*responses, right]]
    assert seen["alice"] == seen["nobody-by-this-name"]
    assert seen["alice"][-1][1].count(LOCKED_MESSAGE) == 1
    assert SignInThrottle.objects.get(kind="username", key="nobody-by-this-name").locked_until > timezone.now()


def _page_text(response, username: str) -> str:
    # The page minus what differs between any two responses: the CSRF token and the name typed (echoed back).
    html = re.sub(r'(csrfmiddlewaretoken" value=|X-CSRFToken": )"[^"]+"', "", response.content.decode())
    return html.replace(username, "NAME")


@pytest.mark.django_db
def test_too_many_failures_from_one_address_lock_that_address_only(client, make_user, settings):
    make_user("alice", Role.HELPDESK)
    for i in range(settings.SIGNIN_ADDRESS_FAILURE_LIMIT):
        _attempt(client, f"guess-{i}", WRONG, address="192.0.2.66")
    assert _alert(_attempt(client, "alice", PASSWORD, address="192.0.2.66")) == LOCKED_MESSAGE
    assert not _signed_in(client)
    assert _attempt(client, "alice", PASSWORD, address="192.0.2.67").status_code == 302
    assert _signed_in(client)


@pytest.mark.django_db
def test_an_expired_lock_lets_the_right_password_in_again(client, make_user):
    make_user("alice", Role.HELPDESK)
    _hammer(client, "alice", times=10)
    # Time passing, without waiting for it: the lock ended a second ago.
    SignInThrottle.objects.filter(kind="username").update(locked_until=timezone.now() - timedelta(seconds=1))
    assert _attempt(client, "alice", PASSWORD).status_code == 302 and _signed_in(client)


@pytest.mark.django_db
def test_the_admin_sites_sign_in_is_throttled_too(client, make_user, settings):
    make_user("root", Role.ADMIN)
    url = "/django-admin/login/"
    for i in range(10):
        response = _attempt(client, "root", WRONG, address=f"198.51.100.{i + 1}", url=url)
    assert LOCKED_MESSAGE in response.content.decode()
    response = _attempt(client, "root", PASSWORD, url=url)
    assert response.status_code == 200 and LOCKED_MESSAGE in response.content.decode()
    assert not _signed_in(client)


@pytest.mark.django_db
def test_admin_site_refusing_a_non_staff_account_is_audited_but_not_counted(client, make_user):
    make_user("helen", Role.HELPDESK)
    response = _attempt(client, "helen", PASSWORD, url="/django-admin/login/")
    assert response.status_code == 200 and not _signed_in(client)
    (event,) = _events("portal.signin.failed")
    assert event.actor.username == "helen" and event.after["outcome"].startswith("refused:")
    assert not SignInThrottle.objects.exists()


@pytest.mark.django_db
def test_an_administrator_releases_a_lock_and_the_release_is_audited(client, make_user):
    make_user("alice", Role.HELPDESK)
    _hammer(client, "alice")
    lock = SignInThrottle.objects.get(kind="username", key="alice")

    admin = Client()
    admin.force_login(make_user("root", Role.ADMIN))
    page = admin.get("/settings/sign-in-locks/")
    assert page.status_code == 200 and "alice" in page.content.decode()

    # No reason: refused, nothing changed.
    admin.post(f"/settings/sign-in-locks/{lock.pk}/release/", {"reason": ""})
    assert SignInThrottle.objects.filter(pk=lock.pk).exists()
    assert not _events("portal.signin.lock_released")

    response = admin.post(f"/settings/sign-in-locks/{lock.pk}/release/", {"reason": "ticket 4711, verified by phone"})
    assert response.status_code == 302
    assert not SignInThrottle.objects.filter(pk=lock.pk).exists()
    (event,) = _events("portal.signin.lock_released")
    assert event.actor.username == "root" and event.reason == "ticket 4711, verified by phone"
    assert event.before["key"] == "alice" and event.before["failures"] >= 5

    assert _attempt(client, "alice", PASSWORD).status_code == 302 and _signed_in(client)


@pytest.mark.django_db
@pytest.mark.parametrize("role", [role for role in Role if role is not Role.ADMIN])
def test_only_the_admin_role_sees_or_releases_locks(client, make_user, role):
    victim = Client()
    make_user("alice", Role.HELPDESK)
    _hammer(victim, "alice", times=5)
    lock = SignInThrottle.objects.get(kind="username", key="alice")
    client.force_login(make_user("someone", role))
    assert client.get("/settings/sign-in-locks/").status_code == 403
    assert client.post(f"/settings/sign-in-locks/{lock.pk}/release/", {"reason": "please"}).status_code == 403
    assert SignInThrottle.objects.filter(pk=lock.pk).exists()
    assert not _events("portal.signin.lock_released")


@pytest.mark.django_db
def test_every_sign_in_event_is_audited_and_no_password_is_ever_recorded(client, make_user):
    root = make_user("root", Role.ADMIN)
    _attempt(client, "root", WRONG)
    (failed,) = _events("portal.signin.failed")
    assert failed.object_id == str(root.pk) and failed.after["address"] == "192.0.2.10"

    assert _attempt(client, "root", PASSWORD).status_code == 302
    (succeeded,) = _events("portal.signin.succeeded")
    assert succeeded.actor == root and succeeded.after == {"username": "root", "address": "192.0.2.10"}

    new_password = "a whole new passphrase 2026"
    response = client.post(
        "/django-admin/password_change/",
        {"old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 302
    root.refresh_from_db()
    assert root.check_password(new_password)
    (changed,) = _events("portal.password.changed")
    assert changed.actor == root

    assert client.post("/logout/").status_code == 302
    (signed_out,) = _events("portal.signin.signed_out")
    assert signed_out.actor == root

    assert _attempt(client, "root", new_password, url="/django-admin/login/").status_code == 302
    assert client.post("/django-admin/logout/").status_code == 302
    assert len(_events("portal.signin.succeeded")) == 2 and len(_events("portal.signin.signed_out")) == 2

    recorded = json.dumps([[e.before, e.after, e.reason, e.object_repr] for e in AuditEvent.objects.all()])
    for secret in (WRONG, PASSWORD, new_password):
        assert secret not in recorded


@pytest.mark.django_db
def test_a_password_change_that_fails_validation_changes_and_records_nothing(client, make_user):
    root = make_user("root", Role.ADMIN)
    client.force_login(root)
    response = client.post(
        "/django-admin/password_change/", {"old_password": WRONG, "new_password1": "x", "new_password2": "x"}
    )
    assert response.status_code == 200
    root.refresh_from_db()
    assert root.check_password(PASSWORD)
    assert not _events("portal.password.changed")


@pytest.mark.parametrize(
    ("meta", "header", "expected"),
    [
        ({"REMOTE_ADDR": "192.0.2.1"}, "", "192.0.2.1"),
        ({"REMOTE_ADDR": "2001:db8:1:2:3:4:5:6"}, "", "2001:db8:1:2::/64"),
        ({"REMOTE_ADDR": "::ffff:192.0.2.1"}, "", "192.0.2.1"),
        ({"REMOTE_ADDR": "not an address"}, "", "unknown"),
        ({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 192.0.2.9"}, "X-Forwarded-For", "192.0.2.9"),
        ({"REMOTE_ADDR": "10.0.0.1"}, "X-Forwarded-For", "unknown"),
    ],
)
def test_client_address_counts_what_the_deployment_trusts(settings, meta, header, expected):
    settings.SIGNIN_CLIENT_ADDRESS_HEADER = header
    assert client_address(RequestFactory().get("/", **meta)) == expected


@pytest.mark.django_db
def test_the_locks_page_lists_locks_before_mere_counts(client, make_user):
    make_user("alice", Role.HELPDESK)
    _hammer(client, "alice", times=5)  # locks the name; each of the five addresses holds one failure
    client.force_login(make_user("root", Role.ADMIN))
    rows = list(client.get("/settings/sign-in-locks/").context["throttles"])
    assert [(row.kind, row.key) for row in rows][0] == ("username", "alice")
    assert all(row.locked_until is None for row in rows[1:])
