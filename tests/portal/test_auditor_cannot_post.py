"""The auditor reads everything and changes nothing: every POST endpoint of the URL map answers 403 to an auditor
(tenant-wide, the role at its widest), with a valid CSRF token, and writes nothing but the record of the refusal
(``portal.request.denied``, naming the auditor and the URL).

The endpoints come from the URL resolver itself (tests/faults/portal_forms.url_names), and each form is aimed at an
object in the state it acts on with the data its author would send (portal_forms.FORMS), so a new endpoint is tested
the day it is added: the catalogue test fails until it is listed, and this one posts to it.
"""

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from portal.roles import Role
from tests.faults.portal_forms import FOREIGN_NAMESPACES, FORMS, NO_FORM, People, State, url_names

pytestmark = pytest.mark.django_db

# POST endpoints the auditor may use, and why each still changes nothing of what the portal manages.
AUDITOR_MAY = {
    "audit_verify": "the auditor's own check: it queues a read-only job over the chain and records that it asked",
    "logout": "signing out ends the auditor's own session",
    "login": "the sign-in form (its POST signs a person in, as any person's does)",
}


def _converters() -> dict[str, dict[str, type]]:
    """Each URL name's path parameters and their kinds, collected through the includes; names inside a namespace
    (the admin site's, the job dashboard's) are given with it, as reverse() takes them."""
    found: dict[str, dict[str, type]] = {}

    def walk(patterns, namespace, inherited) -> None:
        for pattern in patterns:
            converters = {**inherited, **getattr(pattern.pattern, "converters", {})}
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, pattern.namespace or namespace, converters)
            elif isinstance(pattern, URLPattern) and pattern.name:
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
                found[name] = {key: type(conv.to_python("1")) for key, conv in converters.items()}

    walk(get_resolver().url_patterns, None, {})
    return found


FOREIGN = sorted(
    name
    for name in _converters()
    if name.split(":")[0] in FOREIGN_NAMESPACES and name.split(":")[-1] not in AUDITOR_MAY  # admin:login signs in
)


def _url(name: str, converters: dict[str, dict[str, type]]) -> str:
    kwargs = {key: 1 if kind is int else "x" for key, kind in converters.get(name, {}).items()}
    return reverse(name, kwargs=kwargs)


@pytest.fixture
def auditor_browser(make_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("audit-only", Role.AUDITOR))
    client.get("/")  # sets the CSRF cookie, as a browser's first page does
    return client


def _post(client: Client, url: str, data: dict, htmx: bool):
    token = client.cookies["csrftoken"].value
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_X_CSRFTOKEN": token} if htmx else {}
    return client.post(url, {**data, "csrfmiddlewaretoken": token}, **headers)


def test_the_catalogue_covers_the_whole_url_map():
    assert url_names() == set(FORMS) | set(NO_FORM), "catalogue the new endpoint in tests/faults/portal_forms.py"


@pytest.mark.parametrize("name", sorted(set(FORMS) - set(AUDITOR_MAY)))
def test_every_form_answers_403_to_the_auditor_and_changes_nothing(name, make_user, auditor_browser):
    form = FORMS[name](People(make_user))
    before = State()
    response = _post(auditor_browser, form.url, form.payload(), form.htmx)
    after = State()
    assert response.status_code == 403, (name, response.status_code, response.content[:300])
    assert b"CSRF verification failed" not in response.content, "the CSRF token was refused, not the auditor"
    assert after.new_rows_since(before) == {} and after.jobs == before.jobs
    # Refused before the view runs, and recorded (the view's own refusal would be its own ".denied" event).
    assert after.actions_since(before) == ["portal.request.denied"], after.actions_since(before)


@pytest.mark.parametrize("name", sorted(set(NO_FORM) - set(AUDITOR_MAY)))
def test_every_page_without_a_form_answers_403_to_an_auditors_post(name, auditor_browser):
    before = State()
    response = _post(auditor_browser, _url(name, _converters()), {"reason": "x"}, htmx=False)
    after = State()
    assert response.status_code == 403, (name, response.status_code)
    assert after.new_rows_since(before) == {} and after.jobs == before.jobs
    assert after.actions_since(before) == ["portal.request.denied"]


@pytest.mark.parametrize("name", FOREIGN)
def test_the_admin_site_and_the_job_dashboard_answer_403_to_an_auditors_post(name, auditor_browser):
    # Outside the catalogue (Django's and django-rq's own forms), and never an auditor's: refused all the same.
    before = State()
    response = _post(auditor_browser, _url(name, _converters()), {}, htmx=False)
    assert response.status_code == 403, (name, response.status_code)
    assert State().new_rows_since(before) == {}
