"""Two browsers double-submitting every form of the portal: each POST form of the URL map (tests/faults/portal_forms.py
lists them, and fails on any it does not know) is sent twice from one signed-in browser with the same CSRF token, as a
double click or a resent page does, and where another person may send it too, once more from a second browser of
theirs. The second submission must do nothing twice: no audit event of an action the first recorded, no new row in
any table, no job queued (on commit, in Redis), and no 5xx: an idempotent answer or a clear refusal. The first must
have done something (an audit event), so a form that silently did nothing cannot pass. Real database, Redis and
Django's test client with CSRF checks on.
"""

import pytest
from django.test import Client

from tests.faults.portal_forms import FORMS, NO_FORM, REPEATABLE, People, State, uncatalogued

pytestmark = pytest.mark.django_db(transaction=True)

WRITES_NOTHING = {"change_preview", "bulk_preview"}  # a preview reads and shows; only its confirmation writes


def test_every_form_of_the_url_map_is_catalogued():
    assert uncatalogued() == set(), "add the new page to tests/faults/portal_forms.py (FORMS or NO_FORM)"
    assert not set(FORMS) & set(NO_FORM)


def browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/")  # the page sets the CSRF cookie, as the browser's first page does
    return client


def submit(client: Client, form, payload: dict):
    token = client.cookies["csrftoken"].value
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_X_CSRFTOKEN": token} if form.htmx else {}
    response = client.post(form.url, {**payload, "csrfmiddlewaretoken": token}, **headers)
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)
    assert response.status_code < 500, response.content[:1000]
    assert response.status_code != 403 or b"CSRF" not in response.content, "the CSRF token was refused"
    return response


def _check_second(name: str, first: list[str], before: State, after_first: State, after_second: State) -> None:
    second = after_second.actions_since(after_first)
    if name in REPEATABLE:
        assert after_second.new_rows_since(after_first) == {}, REPEATABLE[name]
        return
    assert not set(second) & set(first), f"{name} recorded again: {second} after {first}"
    assert after_second.new_rows_since(after_first) == {}, f"{name} made rows again"
    assert after_second.jobs == after_first.jobs, f"{name} queued work again"


def _sent_once(name: str, form, client: Client) -> tuple[State, State, list[str]]:
    before = State()
    submit(client, form, form.payload())
    after = State()
    first = after.actions_since(before)
    if name in WRITES_NOTHING:
        assert first == [] and after.new_rows_since(before) == {} and after.jobs == before.jobs
    else:
        assert first, f"the first {name} recorded nothing: the form did not do what it is for"
    return before, after, first


@pytest.mark.parametrize("name", sorted(FORMS))
def test_a_form_sent_twice_from_one_browser_does_its_work_once(name, make_user):
    form = FORMS[name](People(make_user))
    client = browser(form.user)
    before, after_first, first = _sent_once(name, form, client)
    submit(client, form, form.payload())  # the same page, the same token: a double click or a resend
    _check_second(name, first, before, after_first, State())


TWO_BROWSERS = sorted(name for name, build in FORMS.items() if name not in WRITES_NOTHING)


@pytest.mark.parametrize("name", TWO_BROWSERS)
def test_a_form_sent_by_two_people_from_two_browsers_does_its_work_once(name, make_user):
    form = FORMS[name](People(make_user))
    if form.second is None:
        pytest.skip(f"no second person sends {name} as the same act (only its author may, or theirs is their own)")
    before, after_first, first = _sent_once(name, form, browser(form.user))
    payload = form.payload()
    if "idempotency_key" in payload:
        payload["idempotency_key"] += "-second-browser"  # each browser's page made its own key
    submit(browser(form.second), form, payload)
    _check_second(name, first, before, after_first, State())
