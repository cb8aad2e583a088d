"""Finding mailboxes on the list page: the department shown, filtered and sorted on; the OU picker built from the
directory tree of the user's scope; column headings that sort; a CSV export of the current filter, streamed, scoped
and recorded."""

import csv
import io

import pytest
from django.urls import reverse

from portal.models import AuditEvent
from portal.roles import Role
from soa.selectors import mailbox_search, ou_tree, paginate
from tests.soa.test_mailbox_pages import CORP, FINANCE, SALES, _mailbox

pytestmark = pytest.mark.django_db
PAYROLL = f"OU=Payroll,{FINANCE}"


@pytest.fixture
def tenant(db):
    rows = {
        "ann": _mailbox("Ann Archer", SALES),
        "bob": _mailbox("Bob Baker", SALES),
        "cid": _mailbox("Cid Cole", FINANCE),
        "dee": _mailbox("Dee Dunn", PAYROLL),
        "eli": _mailbox("=cmd Eli", PAYROLL),
    }
    for key, department in {"ann": "Sales", "bob": "Field Sales", "cid": "Finance", "dee": "Payroll"}.items():
        rows[key].department = department
        rows[key].save(update_fields=["department"])
    return rows


def _names(mailboxes):
    return [m.display_name for m in mailboxes]


def test_the_department_filter_matches_the_whole_value_in_any_letter_case(tenant, make_user):
    user = make_user("wide", Role.WAVE_OPERATOR)
    assert _names(mailbox_search(user=user, department="sales")) == ["Ann Archer"]
    assert _names(mailbox_search(user=user, department=" FIELD SALES ")) == ["Bob Baker"]
    assert _names(mailbox_search(user=user, department="Sal")) == []


def test_sorting_by_department_pages_through_every_row_once_both_ways(tenant, make_user):
    user = make_user("wide", Role.WAVE_OPERATOR)
    mailboxes = mailbox_search(user=user)
    for sort in ("department", "-department"):
        pages, page = [], paginate(mailboxes, sort=sort, size=2)
        pages.append(page)
        while page.next_cursor:
            page = paginate(mailboxes, sort=sort, after=page.next_cursor, size=2)
            pages.append(page)
        seen = [m.department for p in pages for m in p.items]
        assert seen == sorted(seen, reverse=sort.startswith("-")) and len(seen) == 5


def test_the_ou_tree_holds_every_ou_above_the_mailboxes_with_counts_in_depth_first_order(tenant, make_user):
    tree = ou_tree(user=make_user("wide", Role.WAVE_OPERATOR))
    assert [(ou.label, ou.depth, ou.mailboxes) for ou in tree] == [
        ("Corp", 0, 5),
        ("Finance", 1, 3),
        ("Payroll", 2, 2),
        ("Sales", 1, 2),
    ]
    payroll = tree[2]
    assert _names(mailbox_search(user=make_user("w2", Role.WAVE_OPERATOR), ou=payroll.dn)) == ["=cmd Eli", "Dee Dunn"]


def test_the_ou_tree_shows_only_the_users_scope_and_follows_a_narrowed_scope(tenant, make_user):
    from portal.models import RoleAssignment

    user = make_user("scoped", Role.HELPDESK, scopes=(FINANCE,))
    assert [ou.label for ou in ou_tree(user=user)] == ["Corp", "Finance", "Payroll"]
    assert ou_tree(user=user)[0].mailboxes == 3  # Corp counts only what is in scope
    RoleAssignment.objects.filter(user=user).delete()
    from portal.services import role_assign

    role_assign(actor=None, user=user, role=Role.HELPDESK, tenant_wide=False, scopes=(PAYROLL,))
    assert [ou.label for ou in ou_tree(user=user)] == ["Corp", "Finance", "Payroll"]
    assert [ou.mailboxes for ou in ou_tree(user=user)] == [2, 2, 2]


def test_the_list_page_offers_the_ou_picker_and_keeps_a_typed_ou(client, tenant, make_user):
    client.force_login(make_user("wide", Role.WAVE_OPERATOR))
    page = client.get(reverse("mailbox_list")).content.decode()
    assert '<select name="ou"' in page and "\u00a0\u00a0\u00a0\u00a0\u00a0\u00a0Payroll (2)" in page
    typed = "OU=Elsewhere,DC=corp,DC=example,DC=com"
    page = client.get(reverse("mailbox_list"), {"ou": typed}).content.decode()
    assert f'<option value="{typed}" selected>' in page and "0 mailboxes" in page


def test_a_heading_sorts_by_its_column_and_again_the_other_way(client, tenant, make_user):
    client.force_login(make_user("wide", Role.WAVE_OPERATOR))
    response = client.get(reverse("mailbox_list"), {"sort": "department"})
    links = {link["label"]: link for link in response.context["sort_links"]}
    assert links["Department"]["current"] and links["Department"]["href"].endswith("sort=-department")
    assert links["Name"]["href"].endswith("sort=name") and not links["Name"]["current"]
    assert 'aria-sort="ascending"' in response.content.decode()
    rows = [m.department for m in response.context["page"].items]
    assert rows == sorted(rows)


def test_the_export_streams_the_current_filter_as_csv_scoped_and_recorded(client, tenant, make_user):
    user = make_user("fin", Role.HELPDESK, scopes=(FINANCE,))
    client.force_login(user)
    response = client.get(reverse("mailbox_export"), {"sort": "-name"})
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["display_name", "upn", "primary_smtp"]
    assert [row[0] for row in rows[1:]] == ["Dee Dunn", "Cid Cole", "'=cmd Eli"]  # scoped, sorted; a formula defused
    event = AuditEvent.objects.get(action="soa.mailbox.exported")
    assert event.actor == user and event.after == {"filters": {}}

    response = client.get(reverse("mailbox_export"), {"ou": PAYROLL, "q": "dee"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row[0] for row in rows[1:]] == ["Dee Dunn"]
    assert AuditEvent.objects.filter(action="soa.mailbox.exported").order_by("-id")[0].after == {
        "filters": {"query": "dee", "ou": PAYROLL}
    }


def test_an_export_with_a_bad_filter_is_refused_and_not_recorded(client, tenant, make_user):
    client.force_login(make_user("wide", Role.WAVE_OPERATOR))
    response = client.get(reverse("mailbox_export"), {"ou": "not a dn"})
    assert response.status_code == 400 and b"ou" in response.content
    assert not AuditEvent.objects.filter(action="soa.mailbox.exported").exists()


def test_only_a_user_who_may_view_mailboxes_may_export(client, make_user):
    client.force_login(make_user("nobody"))
    assert client.get(reverse("mailbox_export")).status_code == 403


assert CORP  # the fixture's OUs hang below it


def test_the_list_counts_up_to_its_cap_and_says_more_than_beyond(client, tenant, make_user, monkeypatch):
    from soa import selectors

    client.force_login(make_user("wide", Role.WAVE_OPERATOR))
    monkeypatch.setattr(selectors, "COUNT_CAP", 4)
    page = client.get(reverse("mailbox_list")).content.decode()
    assert "More than 4 mailboxes" in page  # five in the tenant
    assert len(client.get(reverse("mailbox_list")).context["page"].items) == 5  # the page itself is not capped
    monkeypatch.setattr(selectors, "COUNT_CAP", 5)
    assert "5 mailboxes" in client.get(reverse("mailbox_list")).content.decode()
    assert selectors.capped_count(mailbox_search(user=make_user("w3", Role.WAVE_OPERATOR)), cap=2) == (2, True)
