"""Every form and every page of the URL map fuzzed through Django's test client (the list pages' query parameters and
the first forms are in test_parameter_fuzz.py, whose values and helpers this module draws on): no 500, and no partial
write. The forms come from the fault suite's catalog of the URL map (tests/faults/portal_forms.py), which fails on a
page it does not know; each is aimed at an object in the state it acts on, sent by a person entitled to it, with each
field its valid value, a drawn value or absent, and stray fields. "No partial write": an answer of 4xx changes no
table (an audit event of the refusal may be written), and whatever changes a table writes its audit event with it.
"""

from urllib.parse import quote

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.portal_forms import FORMS, NO_FORM, People, State
from tests.portal import test_parameter_fuzz as fuzz
from tests.soa.test_wave_support import make_mailbox

pytestmark = pytest.mark.django_db

VALUES, ROLES, LIST_PAGES = fuzz.VALUES, fuzz.ROLES, fuzz.LIST_PAGES
_params, _not_a_server_error = fuzz._params, fuzz._not_a_server_error

FORM_EXAMPLES = 10
PAGE_EXAMPLES = 100


@pytest.fixture(scope="module", autouse=True)
def _report_inputs_tried(request):
    start = fuzz.TRIED[0]
    yield
    fuzz.report_tried(request, fuzz.TRIED[0] - start, "every form and page of the URL map")


def _no_partial_write(response, before: State, after: State) -> None:
    _not_a_server_error(response)
    changed = after.new_rows_since(before)
    events = after.actions_since(before)
    if response.status_code >= 400:
        assert changed == {}, (response.status_code, changed)
    if changed:
        assert events, f"tables changed without an audit event: {changed}"


def _form_params(form):
    """Each field its valid value, a drawn one, or absent; sometimes a stray field or a field twice."""
    valid = form.payload()
    names = form.fields or list(valid) or ["reason"]
    field = st.one_of(st.just(None), VALUES.map(lambda v: [v]), st.lists(VALUES, min_size=2, max_size=3))
    choices = st.fixed_dictionaries({name: st.one_of(st.just("valid"), field) for name in names})
    return st.tuples(choices, _params([]))


@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_form_fuzzed_gives_no_500_and_no_partial_write(client, make_user, name):
    form = FORMS[name](People(make_user))
    senders = [user for user in (form.user, form.second) if user is not None]

    @settings(max_examples=FORM_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(sender=st.sampled_from(senders), drawn=_form_params(form), htmx=st.booleans())
    def check(sender, drawn, htmx):
        choices, stray = drawn
        valid = form.payload()
        data = dict(stray)
        for field, choice in choices.items():
            if choice == "valid":
                if field in valid:
                    data[field] = valid[field]
            elif choice is not None:
                data[field] = choice
        client.force_login(sender)
        before = State()
        response = client.post(form.url, data, **({"HTTP_HX_REQUEST": "true"} if htmx else {}))
        _no_partial_write(response, before, State())

    check()


def _page_targets(make_user) -> dict[str, tuple[str, list[str]]]:
    """Every page that takes no form, at an object that exists, with the query parameters it reads."""
    people = People(make_user)
    wave = FORMS["wave_pause"](people).url.split("/")[2]
    mailbox = make_mailbox("Page Fuzz")
    change = FORMS["change_cancel"](people).url.split("/")
    batch = FORMS["bulk_pause"](people).url.split("/")[2]
    return {
        "dashboard": (reverse("dashboard"), []),
        "login": (reverse("login"), ["next"]),
        "healthz": (reverse("healthz"), []),
        "audit_list": (reverse("audit_list"), LIST_PAGES["audit_list"]),
        "audit_export": (reverse("audit_export", args=["json"]), LIST_PAGES["audit_export"]),
        "audit_verification": (reverse("audit_verification", args=["verify-0"]), []),
        "mailbox_list": (reverse("mailbox_list"), LIST_PAGES["mailbox_list"]),
        "mailbox_export": (reverse("mailbox_export"), LIST_PAGES["mailbox_export"]),
        "mailbox_detail": (reverse("mailbox_detail", args=[mailbox.pk]), []),
        "change_edit": (reverse("change_edit", args=[mailbox.pk, "add_alias"]), ["address", "attribute", "value",
                                                                                 "version"]),
        "mailbox_changes": (reverse("mailbox_changes", args=[change[2]]), ["watching"]),
        "wave_list": (reverse("wave_list"), LIST_PAGES["wave_list"]),
        "wave_detail": (f"/waves/{wave}/", LIST_PAGES["wave_detail"]),
        "wave_preflight": (f"/waves/{wave}/preflight/", []),
        "wave_progress": (f"/waves/{wave}/progress/", []),
        "wave_results_export": (f"/waves/{wave}/results.csv", []),
        "wave_members": (f"/waves/{wave}/members/", []),
        "bulk_upload": (reverse("bulk_upload"), []),
        "bulk_detail": (f"/bulk-edits/{batch}/", []),
        "mailbox_writeback": (reverse("mailbox_writeback", args=[mailbox.pk]), []),
        "drift": (reverse("drift"), LIST_PAGES["drift"]),
        "inventory": (reverse("inventory"), []),
        "connections": (reverse("connections"), []),
        "role_list": (reverse("role_list"), []),
        "signin_locks": (reverse("signin_locks"), []),
        "entra_signin_start": (reverse("entra_signin_start"), ["next"]),
        "entra_signin_callback": (reverse("entra_signin_callback"), ["code", "state", "error", "error_description",
                                                                      "session_state", "client_info"]),
        "group_mapping_list": (reverse("group_mapping_list"), []),
        "mailbox_timeline": (reverse("mailbox_timeline", args=[mailbox.pk]), ["before"]),
        "mailbox_as_of": (reverse("mailbox_as_of", args=[mailbox.pk]), ["at"]),
        "mailbox_compare": (reverse("mailbox_compare", args=[mailbox.pk]), ["earlier", "later"]),
        "readiness": (reverse("readiness"), LIST_PAGES["readiness"]),
        "readiness_report": (reverse("readiness_report"), []),
        "readiness_export": (reverse("readiness_export"), []),
        "tenant_default": (reverse("tenant_default"), ["refresh"]),
    }  # fmt: skip


def test_every_page_without_a_form_is_fuzzed():
    assert set(NO_FORM) == set(_PAGE_NAMES), "fuzz the new page's query parameters in _page_targets"


_PAGE_NAMES = [
    "dashboard", "login", "healthz", "audit_list", "audit_export", "audit_verification", "mailbox_list",
    "mailbox_export", "mailbox_detail", "change_edit", "mailbox_changes", "wave_list", "wave_detail", "wave_preflight",
    "wave_progress", "wave_results_export", "wave_members", "bulk_upload", "bulk_detail", "mailbox_writeback",
    "drift", "inventory", "connections", "role_list", "signin_locks", "entra_signin_start", "entra_signin_callback",
    "group_mapping_list", "mailbox_timeline", "mailbox_as_of", "mailbox_compare", "readiness", "readiness_report",
    "readiness_export", "tenant_default",
]  # fmt: skip


def test_every_page_query_and_path_parameter_gives_no_500_and_writes_nothing_unaudited(client, make_user):
    pages = _page_targets(make_user)
    users = [make_user(f"page-{role}", role) for role in ROLES]
    # Path segments the URL map takes as text: any text there is answered, never a 500.
    texts = {"audit_verification": "/audit/verify/{}/", "change_edit": f"{pages['mailbox_detail'][0]}edit/{{}}/",
             "audit_export": "/audit/export.{}"}  # fmt: skip

    @settings(
        max_examples=FORM_EXAMPLES * 8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(user=st.sampled_from(users), page=st.sampled_from(_PAGE_NAMES), data=st.data(), htmx=st.booleans())
    def check(user, page, data, htmx):
        url, names = pages[page]
        if page in texts and data.draw(st.booleans()):
            segment = data.draw(st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t and t not in ".."))
            url = texts[page].format(quote(segment, safe=""))
        client.force_login(user)
        before = State()
        response = client.get(url, data.draw(_params(names)), **({"HTTP_HX_REQUEST": "true"} if htmx else {}))
        _no_partial_write(response, before, State())

    check()
