"""The mailbox list at scale (issue 11 item 4): a capped count that says "more than" and pages that still reach every
row, keyset pages that hold exactly the filtered rows in order both ways for every filter and sort, an OU subtree
matched on the reversed DN exactly as on the DN, and on PostgreSQL an index behind every filter (EXPLAIN)."""

import itertools
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.dn import normalize_dn
from portal.roles import Role
from soa import selectors, views
from soa.choices import Authority
from soa.forms import MailboxFilterForm
from soa.models import Mailbox
from soa.selectors import SORTS, capped_count, mailbox_search, paginate
from tests.soa.test_mailbox_pages import CORP, FINANCE, SALES, _mailbox

pytestmark = pytest.mark.django_db
PAYROLL = f"OU=Payroll,{FINANCE}"
PRESALES = f"OU=PreSales,{CORP}"  # ends with "Sales,OU=Corp,...": outside the Sales subtree all the same
EAST = f"OU=Sales\\, East,{SALES}"  # an escaped comma in an OU's name
OUS = [SALES, FINANCE, PAYROLL, PRESALES, EAST]
GIVEN = ["Ann", "Bob", "Cid", "Dee", "Eve", "Ann Marie"]
TYPES = ["UserMailbox", "SharedMailbox", "RoomMailbox", "EquipmentMailbox"]


@pytest.fixture
def tenant(db):
    """40 mailboxes whose OU, authority, type, drift and department vary at random (fixed seed); names repeat, so
    the keyset's tie-break on id is exercised."""
    rng = random.Random(11)
    rows = []
    for index in range(40):
        name = f"{rng.choice(GIVEN)} {rng.choice(['Archer', 'Baker', 'Cole'])}"
        mailbox = _mailbox(
            name if index % 3 else f"{name} {index:02d}", rng.choice(OUS), authority=rng.choice(list(Authority)),
            drift=["CustomAttribute1"] if rng.random() < 0.3 else (), rtype=rng.choice(TYPES),
        )  # fmt: skip
        mailbox.department = rng.choice(["", "Sales", "Finance", "FINANCE"])
        mailbox.save(update_fields=["department"])
        rows.append(mailbox)
    return rows


def _below(dn_norm: str, base: str) -> bool:
    return dn_norm == base or dn_norm.endswith("," + base)


def _matches(mailbox: Mailbox, filters: dict) -> bool:
    """The list's filters, applied here to one row (soa.selectors.mailbox_search's rules)."""
    query = filters.get("q", "").lower()
    if query:
        words = mailbox.search_name.split(" ")
        names = [" ".join(words[start:]) for start in range(len(words))]
        texts = [*names, mailbox.upn, *(address.address for address in mailbox.addresses.all())]
        if not any(text.startswith(query) for text in texts):
            return False
    if filters.get("ou") and not _below(mailbox.ou_norm, normalize_dn(filters["ou"])):
        return False
    checks = {
        "authority": lambda: mailbox.authority == filters["authority"],
        "recipient_type": lambda: mailbox.recipient_type_details == filters["recipient_type"],
        "drift": lambda: mailbox.has_drift == (filters["drift"] == "yes"),
        "department": lambda: mailbox.department.lower() == filters["department"].lower(),
    }
    return all(check() for name, check in checks.items() if filters.get(name))


FILTERS = [
    {},
    {"q": "ann"},
    {"q": "archer"},
    {"authority": "CLOUD"},
    {"recipient_type": "SharedMailbox"},
    {"ou": SALES},
    {"ou": EAST},
    {"ou": PRESALES},
    {"drift": "yes"},
    {"drift": "no"},
    {"department": "finance"},
    {"ou": SALES, "authority": "ON_PREM", "drift": "no"},
    {"q": "ann", "ou": FINANCE, "department": "Finance"},
    {"authority": "CLOUD", "drift": "no", "department": "sales"},
]


def _walk(mailboxes, sort: str, size: int, few: bool) -> tuple[list[list[int]], list[list[int]]]:
    """Every page forward from the first, then every page backward from the last: their ids."""
    forward, page = [], paginate(mailboxes, sort=sort, size=size, few=few)
    forward.append([m.pk for m in page.items])
    while page.next_cursor:
        page = paginate(mailboxes, sort=sort, after=page.next_cursor, size=size, few=few)
        forward.append([m.pk for m in page.items])
    backward = []
    while page.prev_cursor:
        page = paginate(mailboxes, sort=sort, before=page.prev_cursor, size=size, few=few)
        backward.append([m.pk for m in page.items])
    return forward, backward


@pytest.mark.parametrize("filters", FILTERS, ids=lambda filters: "+".join(filters) or "none")
def test_every_filter_and_sort_pages_through_exactly_its_rows_in_order_both_ways(tenant, make_user, filters):
    user = make_user("wide", Role.WAVE_OPERATOR)
    form = MailboxFilterForm(filters)
    assert form.is_valid(), form.errors
    mailboxes = mailbox_search(user=user, **form.selector_filters())
    matching = [m for m in Mailbox.objects.prefetch_related("addresses") if _matches(m, filters)]
    assert matching, "the seed gives each filter rows to page through"
    # few: the order the page uses when its count stayed under the cap (an expression no index holds), the same
    for (sort, (field, descending)), few in itertools.product(SORTS.items(), (False, True)):
        expected = [m.pk for m in sorted(matching, key=lambda m: (getattr(m, field), m.pk), reverse=descending)]
        forward, backward = _walk(mailboxes, sort, size=3, few=few)
        assert [pk for page in forward for pk in page] == expected, sort
        assert all(len(page) == 3 for page in forward[:-1])
        assert backward == forward[-2::-1], sort  # back from the last page: the same pages, none skipped
        total = len(expected)
        assert capped_count(mailboxes, cap=total) == (total, False)
        if total:
            assert capped_count(mailboxes, cap=total - 1) == (total - 1, True)


def test_the_page_says_more_than_its_cap_and_its_next_links_still_reach_every_row(
    client, tenant, make_user, monkeypatch
):
    monkeypatch.setattr(selectors, "COUNT_CAP", 10)
    monkeypatch.setattr(views, "PAGE_SIZE", 7)
    client.force_login(make_user("wide", Role.WAVE_OPERATOR))
    url, seen = reverse("mailbox_list") + "?sort=-upn", []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        assert "More than 10 mailboxes: narrow the search to count them" in response.content.decode()
        assert response.context["total"] == 10 and response.context["more"]
        seen += [m.upn for m in response.context["page"].items]
        cursor = response.context["page"].next_cursor
        url = reverse("mailbox_list") + f"?sort=-upn&after={cursor}" if cursor else ""
    assert seen == sorted((m.upn for m in tenant), reverse=True)  # 40 rows: every one once, in order
    response = client.get(reverse("mailbox_list"), {"ou": PAYROLL})
    payroll = sum(1 for m in tenant if _below(m.ou_norm, normalize_dn(PAYROLL)))
    assert payroll <= 10 and not response.context["more"]
    assert f"{payroll} mailbox" in response.content.decode()  # below the cap: the exact count


def test_a_count_above_the_real_cap_is_written_with_thousands_separators(client, make_user, monkeypatch):
    _mailbox("Ann Archer", SALES)
    _mailbox("Bob Baker", SALES)
    monkeypatch.setattr(selectors, "COUNT_CAP", 1)
    client.force_login(make_user("wide", Role.WAVE_OPERATOR))
    assert "More than 1 mailboxes" in client.get(reverse("mailbox_list")).content.decode()
    monkeypatch.setattr(selectors, "capped_count", lambda mailboxes: (10_000, True))
    monkeypatch.setattr(views, "capped_count", lambda mailboxes: (10_000, True))
    assert "More than 10,000 mailboxes" in client.get(reverse("mailbox_list")).content.decode()


@pytest.mark.parametrize("scope", [SALES, EAST, PRESALES, FINANCE])
def test_a_scope_and_the_ou_filter_match_the_subtree_on_the_reversed_dn_as_on_the_dn(tenant, make_user, scope):
    user = make_user("scoped", Role.HELPDESK, scopes=(scope,))
    base = Mailbox.objects.filter(dn_norm__endswith="," + normalize_dn(scope)).values_list("pk", flat=True)
    assert set(mailbox_search(user=user).values_list("pk", flat=True)) == set(base)
    wide = make_user("wide", Role.WAVE_OPERATOR)
    form = MailboxFilterForm({"ou": scope})
    assert form.is_valid()
    assert set(mailbox_search(user=wide, **form.selector_filters()).values_list("pk", flat=True)) == set(base)
    if scope == SALES:  # EAST lies below Sales; PreSales, whose DN ends with "Sales,OU=Corp,...", does not
        ous = set(Mailbox.objects.filter(pk__in=base).values_list("ou_norm", flat=True))
        assert normalize_dn(EAST) in ous and normalize_dn(PRESALES) not in ous


# -- PostgreSQL: an index serves every filter ------------------------------------------------------------------------

# Filters each with a value, and the sorts: every combination of up to three filters with each sort.
_VALUES = {"q": "ann", "authority": "CLOUD", "recipient_type": "RoomMailbox", "ou": SALES, "drift": "yes",
           "department": "Sales"}  # fmt: skip


def _plan_of_page(user, filters: dict, sort: str) -> list[str]:
    """The EXPLAIN of each query the list page runs on soa_mailbox for ``filters`` (the capped count, the page)."""
    form = MailboxFilterForm({**filters, "sort": sort})
    assert form.is_valid(), form.errors
    mailboxes = mailbox_search(user=user, **form.selector_filters())
    with CaptureQueriesContext(connection) as queries:
        capped_count(mailboxes)
        paginate(mailboxes, sort=sort, size=50)
    plans = []
    with connection.cursor() as cursor:
        for entry in queries.captured_queries:
            if "soa_mailbox" in entry["sql"]:
                cursor.execute("EXPLAIN " + entry["sql"])
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return plans


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the indexes of soa 0013 are PostgreSQL's")
def test_every_filter_combination_has_an_index_that_serves_it(tenant, make_user):
    """With sequential scans priced out (enable_seqscan off), PostgreSQL still plans every combination of the list's
    filters, under each sort and for an OU-scoped user, without reading soa_mailbox whole: an index serves each.
    (Whether the planner picks it at a million rows is what bench/bench_mailbox_search.py prints.)"""
    wide = make_user("wide", Role.WAVE_OPERATOR)
    scoped = make_user("scoped", Role.HELPDESK, scopes=(SALES,))
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
    try:
        combos = [combo for size in range(0, 4) for combo in itertools.combinations(_VALUES, size)]
        for combo, sort, user in itertools.product(combos, SORTS, (wide, scoped)):
            for plan in _plan_of_page(user, {name: _VALUES[name] for name in combo}, sort):
                assert "Seq Scan on soa_mailbox " not in plan + " ", (combo, sort, user.username, plan)
        # The subtree filters read the reversed-DN indexes, not a scan of another index.
        assert all("soa_mailbox_dn_rev_idx" in plan for plan in _plan_of_page(scoped, {}, "name"))
        assert all("soa_mailbox_ou_rev_idx" in plan for plan in _plan_of_page(wide, {"ou": EAST}, "name"))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = on")
