"""Mailbox list and detail: search, filters, keyset pagination and scoping by role."""

import pytest

from portal.cursors import BadCursor
from portal.dn import normalize_dn
from portal.roles import Role
from soa.choices import Authority, Pairing
from soa.models import Mailbox, MailboxAddress
from soa.name_words import name_suffixes, name_words_replace
from soa.selectors import mailbox_search, paginate

CORP = "OU=Corp,DC=corp,DC=example,DC=com"
SALES = f"OU=Sales,{CORP}"
FINANCE = f"OU=Finance,{CORP}"


def _mailbox(name: str, ou: str, *, authority=Authority.ON_PREM, addresses=(), drift=(), rtype="UserMailbox"):
    dn = "CN={},{}".format(name.replace(",", "\\,"), ou)  # a comma in a name is escaped in its DN
    alias = "".join(c for c in name.lower().replace(" ", ".") if c.isalnum() or c == ".")
    mailbox = Mailbox.objects.create(
        dn=dn, dn_norm=normalize_dn(dn), ou_norm=normalize_dn(ou), upn=f"{alias}@corp.example.com",
        display_name=name, search_name=name.lower(), primary_smtp=f"{alias}@corp.example.com", authority=authority,
        recipient_type_details=rtype, drift=list(drift), has_drift=bool(drift),
        exo_values={"CustomAttribute1": "cloud"}, ad_values={"CustomAttribute1": "ad", "DisplayName": name},
    )  # fmt: skip
    for index, address in enumerate([f"{alias}@corp.example.com", *addresses]):
        MailboxAddress.objects.create(mailbox=mailbox, prefix="smtp", address=address, is_primary=index == 0)
    name_words_replace([mailbox])  # as the inventory import keeps them
    return mailbox


@pytest.fixture
def tenant(db):
    return {
        "ann": _mailbox("Ann Archer", SALES, addresses=["sales-team@corp.example.com"]),
        "bob": _mailbox("Bob Baker", SALES, authority=Authority.CLOUD, drift=["CustomAttribute1"]),
        "cid": _mailbox("Cid Cole", FINANCE, rtype="SharedMailbox"),
        "dee": _mailbox("Dee Dunn", f"OU=Payroll,{FINANCE}", authority=Authority.CLOUD),
        "eve": _mailbox("Evans, Eve (Payroll)", f"OU=Payroll,{FINANCE}"),
    }


def _names(mailboxes):
    return {m.display_name for m in mailboxes}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"query": "ann"}, {"Ann Archer"}),
        ({"query": "ARCHER"}, {"Ann Archer"}),  # the surname, any case
        ({"query": "arc"}, {"Ann Archer"}),  # a prefix of any word
        ({"query": "ann arc"}, {"Ann Archer"}),
        ({"query": "eve (pay"}, {"Evans, Eve (Payroll)"}),  # from a later word on
        ({"query": "payroll"}, {"Evans, Eve (Payroll)"}),
        ({"query": "rcher"}, set()),  # a word's middle is not a match
        ({"query": "BOB.b"}, {"Bob Baker"}),  # UPN prefix, any case
        ({"query": "sales-te"}, {"Ann Archer"}),  # a secondary alias prefix
        ({"query": "smtp:SALES-TEAM@"}, {"Ann Archer"}),
        ({"query": "%"}, set()),  # not a wildcard
        ({"authority": Authority.CLOUD}, {"Bob Baker", "Dee Dunn"}),
        ({"recipient_type": "SharedMailbox"}, {"Cid Cole"}),
        ({"ou": FINANCE.upper()}, {"Cid Cole", "Dee Dunn", "Evans, Eve (Payroll)"}),  # the OU and below
        ({"drift": True}, {"Bob Baker"}),
        ({"drift": False, "authority": Authority.CLOUD}, {"Dee Dunn"}),
        ({"ou": "not a dn"}, set()),
    ],
)
def test_search_and_filters(tenant, make_user, filters, expected):
    user = make_user("wide", Role.WAVE_OPERATOR)
    assert _names(mailbox_search(user=user, **filters)) == expected


@pytest.mark.parametrize(
    ("name", "suffixes"),
    [
        ("ann archer", ["archer"]),
        ("mary ann archer", ["ann archer", "archer"]),
        ("archer, ann (sales)", ["ann (sales)", "sales)"]),
        ("anne smith-jones", ["smith-jones", "jones"]),
        ("o'neil", ["neil"]),
        ("  cher  ", []),
        ("", []),
    ],
)
def test_a_name_is_found_from_each_of_its_words(name, suffixes):
    assert name_suffixes(name) == suffixes


def test_keyset_pages_cover_every_row_once_in_order_both_ways(db, make_user):
    for i in range(23):
        _mailbox(f"User {i:02d}", SALES)
    _mailbox("User 05", FINANCE)  # a duplicate name: the id breaks the tie
    user = make_user("wide", Role.WAVE_OPERATOR)
    mailboxes = mailbox_search(user=user)
    expected = list(mailboxes.order_by("display_name", "id"))
    pages, page = [], paginate(mailboxes, sort="name", size=5)
    pages.append(page)
    while page.next_cursor:
        page = paginate(mailboxes, sort="name", after=page.next_cursor, size=5)
        pages.append(page)
    assert [m for p in pages for m in p.items] == expected
    assert pages[0].prev_cursor is None and pages[-1].next_cursor is None
    # Walk back from the last page to the first.
    back = [pages[-1]]
    while back[-1].prev_cursor:
        back.append(paginate(mailboxes, sort="name", before=back[-1].prev_cursor, size=5))
    assert [m for p in reversed(back) for m in p.items] == expected


def test_descending_sort_and_a_garbled_cursor_is_refused(db, make_user):
    for name in ("A", "B", "C"):
        _mailbox(name, SALES)
    user = make_user("wide", Role.WAVE_OPERATOR)
    page = paginate(mailbox_search(user=user), sort="-name", size=2)
    assert [m.display_name for m in page.items] == ["C", "B"]
    assert [
        m.display_name for m in paginate(mailbox_search(user=user), sort="-name", after=page.next_cursor).items
    ] == ["A"]
    with pytest.raises(BadCursor, match="The page link is not valid"):
        paginate(mailbox_search(user=user), sort="name", after="@@garbage")


@pytest.mark.parametrize("role", list(Role))
def test_list_page_shows_only_the_users_scope(client, tenant, make_user, role):
    scopes = (SALES,) if role in (Role.HELPDESK, Role.WAVE_OPERATOR, Role.APPROVER) else ()
    client.force_login(make_user("viewer", role, scopes=scopes))
    response = client.get("/mailboxes/")
    assert response.status_code == 200
    shown = _names(response.context["page"].items)
    assert shown == ({"Ann Archer", "Bob Baker"} if scopes else set(_names(tenant.values())))
    assert response.context["total"] == len(shown)


def test_detail_outside_scope_is_404_not_403(client, tenant, make_user):
    client.force_login(make_user("helen", Role.HELPDESK, scopes=(SALES,)))
    assert client.get(f"/mailboxes/{tenant['ann'].pk}/").status_code == 200
    assert client.get(f"/mailboxes/{tenant['cid'].pk}/").status_code == 404
    assert client.get("/mailboxes/999999/").status_code == 404


def test_detail_shows_both_sides_drift_and_identity_read_only(client, tenant, make_user):
    client.force_login(make_user("wide", Role.AUDITOR))
    page = client.get(f"/mailboxes/{tenant['bob'].pk}/").content.decode()
    assert "Exchange Online is authority" in page
    assert "cloud" in page and "differs" in page
    assert "Active Directory masters these" in page


def test_user_without_role_cannot_open_mailboxes(client, tenant, make_user):
    client.force_login(make_user("newcomer"))
    assert client.get("/mailboxes/").status_code == 403
    assert client.get(f"/mailboxes/{tenant['ann'].pk}/").status_code == 403


def test_invalid_ou_is_reported_in_the_htmx_partial(client, tenant, make_user):
    client.force_login(make_user("wide", Role.AUDITOR))
    response = client.get("/mailboxes/", {"ou": "garbage"}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200
    # The partial: the live count (filled in place, out of band) and the results, no page around them.
    assert body.lstrip().startswith('<p class="count" id="mailbox-count"') and 'hx-swap-oob="innerHTML"' in body
    assert '<div id="mailbox-results">' in body and "<html" not in body and "<nav" not in body
    assert "not a valid distinguished name" in body


def test_empty_state_says_why(client, db, make_user):
    client.force_login(make_user("wide", Role.AUDITOR))
    assert "once the inventory has been imported" in client.get("/mailboxes/").content.decode()


def test_detail_says_how_the_two_sides_were_paired_and_flags_a_name_match(client, tenant, make_user):
    client.force_login(make_user("wide", Role.AUDITOR))
    Mailbox.objects.filter(pk=tenant["ann"].pk).update(in_ad=True, in_exo=True, pairing=Pairing.DIRECTORY_ID)
    Mailbox.objects.filter(pk=tenant["bob"].pk).update(in_ad=True, in_exo=True, pairing=Pairing.UPN)
    ann = client.get(f"/mailboxes/{tenant['ann'].pk}/").content.decode()
    assert "msDS-ExternalDirectoryObjectID" in ann and "matched by name" not in ann
    bob = client.get(f"/mailboxes/{tenant['bob'].pk}/").content.decode()
    assert "UPN match (weak)" in bob and "matched by name, not by identifier" in bob
    cid = client.get(f"/mailboxes/{tenant['cid'].pk}/").content.decode()
    assert "only one side is known" in cid
