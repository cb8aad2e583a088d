"""Crafted query and form parameters never get a 500: hypothesis sends every list page's query parameters, and the
numeric and free-text fields of the forms that take them, through Django's test client as each role.

Values are drawn from what an attacker or a careless user sends: any text (NUL, surrogates' neighbours, very long
strings), numbers written every way (1e400, -0, 10**30, NaN), cursors wrapping any JSON (Infinity, deep nesting,
huge ids, floats) and the values of the issue that found these bugs. The test client re-raises a view's exception,
so a 500 fails the example with its traceback; the assertion also refuses any 5xx answered without one.
"""

import base64
import json

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.roles import Role
from soa.choices import WaveDirection
from soa.models import PilotWave
from tests.soa.test_wave_support import FINANCE, make_mailbox, new_wave

pytestmark = pytest.mark.django_db

EXAMPLES = 40  # per test (each drawing the role): with the reported values, about 800 requests in all


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, allow_nan=True).encode()).decode()


# The values the hardening issue reported, and their neighbours.
CRAFTED = [
    _cursor(["a", float("inf")]),
    base64.urlsafe_b64encode(b'["a",Infinity]').decode(),
    base64.urlsafe_b64encode(b"1e400").decode(),
    base64.urlsafe_b64encode(b'["a",1e400]').decode(),
    base64.urlsafe_b64encode(b"[" * 1000 + b"]" * 1000).decode(),
    base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", ' + b"9" * 5000 + b"]").decode(),
    _cursor(["a", 10**30]),
    _cursor(["a", -1]),
    _cursor([["a"], 1]),
    _cursor(["2026-01-01T00:00:00+00:00", 1]),
    _cursor([True, True]),
    "1e400", "1e20", "100000000000000000000", "-1", "0", "NaN", "inf", "-0", "9" * 5000, "\x00", "%00", "",
    "..", "OU=Sales,DC=corp,DC=example,DC=com", "=cmd|' /C calc'!A0", "<script>alert(1)</script>",
]  # fmt: skip

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)
VALUES = st.one_of(
    st.sampled_from(CRAFTED),
    st.text(max_size=60),
    st.text(min_size=2000, max_size=5000, alphabet="ab@,.=\n"),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    _json.map(_cursor),
)

# Every list page and the query parameters it reads.
LIST_PAGES = {
    "dashboard": [],
    "mailbox_list": ["q", "authority", "recipient_type", "ou", "department", "drift", "sort", "after", "before"],
    "mailbox_export": ["q", "authority", "recipient_type", "ou", "department", "drift", "sort"],
    "wave_list": ["state", "mine"],
    "wave_detail": ["q", "authority", "recipient_type", "ou", "drift", "sort"],
    "audit_list": [
        "actor",
        "action",
        "object",
        "correlation_id",
        "mailbox",
        "wave",
        "hide_audit",
        "since",
        "until",
        "after",
        "before",
    ],
    "audit_export": ["actor", "action", "object", "correlation_id", "mailbox", "wave", "hide_audit", "since", "until"],
    "drift": ["ou", "attribute", "age", "after"],
    "inventory": [],
    "role_list": [],
    "group_mapping_list": [],
    "bulk_upload": [],
    "mailbox_timeline": ["before"],
    "mailbox_as_of": ["at"],
    "mailbox_compare": ["earlier", "later"],
    "readiness": [],  # reads no parameter: the figures cover the user's scope
    "tenant_default": ["refresh"],  # "1" reads Exchange Online again instead of the cached value
}
# The parameters read as a cursor, a page or a number, each sent every crafted value below as it is.
NUMERIC_PARAMS = [
    ("mailbox_list", "after"), ("mailbox_list", "before"), ("drift", "after"), ("drift", "age"),
    ("audit_list", "after"), ("audit_list", "before"), ("audit_list", "wave"), ("audit_list", "since"),
    ("mailbox_timeline", "before"), ("mailbox_as_of", "at"), ("mailbox_compare", "earlier"),
]  # fmt: skip

ROLES = [Role.HELPDESK, Role.WAVE_OPERATOR, Role.APPROVER, Role.AUDITOR, Role.ADMIN]


@pytest.fixture
def fuzz_tenant(make_user):
    """One user per role (tenant-wide), a mailbox and a draft wave to point the pages at."""
    users = {role: make_user(f"fuzz-{role}", role) for role in ROLES}
    builder = make_user("fuzz-builder", Role.WAVE_OPERATOR)
    wave = new_wave(builder, make_mailbox("Ann Archer"), make_mailbox("Finn Fisher", FINANCE))
    return {"users": users, "wave": wave}


def _url(name: str, wave: PilotWave) -> str:
    if name == "wave_detail":
        return reverse(name, args=[wave.pk])
    if name == "audit_export":
        return reverse(name, args=["csv"])
    if name in ("mailbox_timeline", "mailbox_as_of", "mailbox_compare"):
        return reverse(name, args=[wave.members.first().mailbox_id])
    return reverse(name)


def _params(names: list[str]):
    """A request's parameters: known names most of the time, a stray one sometimes, a name repeated at times."""
    keys = (st.sampled_from(names) | st.text(max_size=8)) if names else st.text(max_size=8)
    return st.lists(st.tuples(keys, VALUES), max_size=6).map(_grouped)


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {}
    for key, value in pairs:
        data.setdefault(key, []).append(value)
    return data


TRIED = [0]  # requests sent by this module's tests, printed when the module ends


def report_tried(request, count: int, what: str) -> None:
    """Print how many inputs a module tried, past pytest's capture (the figure the hardening issue asks for)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"parameter fuzz: {count} inputs tried ({what})")


@pytest.fixture(scope="module", autouse=True)
def _report_inputs_tried(request):
    start = TRIED[0]
    yield
    report_tried(request, TRIED[0] - start, "list pages' query parameters and the first forms")


def _not_a_server_error(response) -> None:
    TRIED[0] += 1
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)  # an export's rows are computed while it streams
    assert response.status_code < 500, response.content[:500]


@pytest.mark.parametrize(("page", "param"), NUMERIC_PARAMS)
def test_the_reported_values_get_a_clear_answer(client, fuzz_tenant, page, param):
    client.force_login(fuzz_tenant["users"][Role.ADMIN])
    for value in CRAFTED:
        response = client.get(_url(page, fuzz_tenant["wave"]), {param: value})
        _not_a_server_error(response)
        if response.status_code == 400:
            assert b"The page link is not valid" in response.content


@pytest.mark.parametrize("page", list(LIST_PAGES))
def test_list_page_query_parameters_never_give_a_500(client, fuzz_tenant, page):
    url, users = _url(page, fuzz_tenant["wave"]), fuzz_tenant["users"]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(role=st.sampled_from(ROLES), params=_params(LIST_PAGES[page]), htmx=st.booleans())
    def check(role, params, htmx):
        client.force_login(users[role])
        headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
        _not_a_server_error(client.get(url, params, **headers))

    check()


WAVE_FORM = {
    "name": st.text(max_size=300) | st.sampled_from(CRAFTED),
    "direction": st.sampled_from([*WaveDirection.values, "", "x"]),
    "description": st.text(max_size=50) | st.just("d" * 5000),
    "required_approvals": VALUES,
    "batch_size": VALUES,
    "max_rate": VALUES,
    "window_start": VALUES,
    "window_end": VALUES,
}


@pytest.mark.parametrize("field", ["required_approvals", "batch_size", "max_rate"])
def test_the_reported_numbers_in_the_wave_form_get_a_form_error(client, fuzz_tenant, field):
    client.force_login(fuzz_tenant["users"][Role.WAVE_OPERATOR])
    valid = {"name": "Fuzz", "direction": WaveDirection.TO_CLOUD, "required_approvals": "1", "batch_size": "50",
             "max_rate": "5"}  # fmt: skip
    for value in CRAFTED:
        response = client.post(reverse("wave_create"), {**valid, field: value})
        assert response.status_code in (200, 400), (value, response.status_code)
        assert b"errorlist" in response.content or b'class="error' in response.content, value
    assert not PilotWave.objects.filter(name="Fuzz").exists()


def test_wave_form_numbers_never_give_a_500(client, fuzz_tenant):
    users = fuzz_tenant["users"]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(role=st.sampled_from(ROLES), form=st.fixed_dictionaries({}, optional=WAVE_FORM))
    def check(role, form):
        client.force_login(users[role])
        _not_a_server_error(client.post(reverse("wave_create"), form))

    check()


def _post_targets(tenant) -> dict[str, tuple[str, list[str]]]:
    """POST forms with a reason, ids or numbers, each aimed at an object that exists."""
    wave = tenant["wave"].pk
    return {
        "wave_cancel": (reverse("wave_cancel", args=[wave]), ["reason"]),
        "wave_withdraw": (reverse("wave_withdraw", args=[wave]), ["reason"]),
        "wave_pause": (reverse("wave_pause", args=[wave]), ["reason"]),
        "wave_approve": (reverse("wave_approve", args=[wave]), ["reason", "acknowledge_warnings"]),
        "wave_reject": (reverse("wave_reject", args=[wave]), ["reason"]),
        "wave_add_members": (reverse("wave_add_members", args=[wave]), ["mailbox"]),
        "wave_remove_members": (reverse("wave_remove_members", args=[wave]), ["mailbox"]),
        "wave_add_by_filter": (
            reverse("wave_add_by_filter", args=[wave]),
            ["filter-q", "filter-ou", "filter-department", "filter-recipient_type", "filter-drift", "filter-authority"],
        ),
        "wave_add_from_csv": (reverse("wave_add_from_csv", args=[wave]), ["text"]),
        "drift_bulk_repair": (reverse("drift_bulk_repair"), ["reason"]),
        "inventory_start": (reverse("inventory_start"), ["mode"]),
        "role_assign": (reverse("role_assign"), ["user", "role", "tenant_wide", "scopes", "reason"]),
        "bulk_confirm": (reverse("bulk_confirm"), ["text", "file_name", "idempotency_key", "reason"]),
    }


def test_form_fields_never_give_a_500(client, fuzz_tenant):
    users, targets = fuzz_tenant["users"], _post_targets(fuzz_tenant)

    @settings(max_examples=EXAMPLES * 3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(role=st.sampled_from(ROLES), target=st.sampled_from(sorted(targets)), data=st.data())
    def check(role, target, data):
        client.force_login(users[role])
        url, names = targets[target]
        _not_a_server_error(client.post(url, data.draw(_params(names))))

    check()
