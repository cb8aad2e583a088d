"""Building a wave: creating it, choosing members by id, by filter and from a CSV list, removing them."""

import datetime as dt

import pytest
from django.utils import timezone

from soa.choices import Authority, WaveDirection, WaveState
from soa.models import PilotWave, WaveMember
from soa.services import SoaError
from soa.services.wave_members import (
    CsvImportError,
    wave_add_by_filter,
    wave_add_from_csv,
    wave_add_members,
    wave_remove_members,
)
from soa.services.waves import wave_create, wave_update
from tests.soa.test_wave_support import FINANCE, SALES, cast, events, last_event, make_mailbox, new_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def _member_ids(wave) -> set[int]:
    return set(WaveMember.objects.filter(wave=wave).values_list("mailbox_id", flat=True))


# -- creating ------------------------------------------------------------------------------------------------------


def test_create_records_the_draft_and_its_audit_event(people):
    wave = wave_create(actor=people["op"], name="  Sales   pilot ", direction=WaveDirection.TO_CLOUD,
                       description=" first ", required_approvals=2, batch_size=20, max_rate=2.5)  # fmt: skip
    assert (wave.name, wave.state, wave.description, wave.created_by) == ("Sales pilot", "DRAFT", "first", people["op"])
    event = last_event("soa.wave.created", wave)
    assert event.actor == people["op"] and event.before is None
    assert (
        event.after["state"] == "DRAFT" and event.after["required_approvals"] == 2 and event.after["batch_size"] == 20
    )


@pytest.mark.parametrize("who", ["approver", "helpdesk"])
def test_only_wave_builders_create_waves(people, who):
    with pytest.raises(SoaError, match="Your roles do not allow building pilot waves"):
        wave_create(actor=people[who], name="W", direction=WaveDirection.TO_CLOUD)
    assert not PilotWave.objects.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "  "}, "Give the wave a name"),
        ({"direction": "SIDEWAYS"}, "Choose the direction"),
        ({"required_approvals": 0}, "at least one approval"),
        ({"batch_size": 0}, "batch size must be between 1 and 1000"),
        ({"batch_size": 5000}, "batch size must be between 1 and 1000"),
        ({"max_rate": 0}, "rate must be above 0"),
        ({"max_rate": 1000}, "rate must be above 0"),
        ({"window_start": timezone.now() + dt.timedelta(days=2), "window_end": timezone.now() + dt.timedelta(days=1)},
         "must end after it starts"),
        ({"window_end": timezone.now() - dt.timedelta(hours=1)}, "ends in the past"),
    ],
)  # fmt: skip
def test_create_refuses_bad_settings(people, options, message):
    arguments = {"name": "W", "direction": WaveDirection.TO_CLOUD, **options}
    with pytest.raises(SoaError, match=message):
        wave_create(actor=people["op"], **arguments)
    assert not PilotWave.objects.exists()


def test_the_installation_may_demand_more_approvals(people, settings):
    settings.WAVE_MIN_APPROVALS = 2
    with pytest.raises(SoaError, match="requires at least 2 distinct approvers per wave"):
        wave_create(actor=people["op"], name="W", direction=WaveDirection.TO_CLOUD)
    wave = wave_create(actor=people["op"], name="W", direction=WaveDirection.TO_CLOUD, required_approvals=3)
    with pytest.raises(SoaError, match="requires at least 2 distinct approvers per wave"):
        wave_update(actor=people["op"], wave_id=wave.pk, required_approvals=1)


def test_names_are_unique_among_open_waves_only(people):
    wave = wave_create(actor=people["op"], name="Pilot", direction=WaveDirection.TO_CLOUD)
    with pytest.raises(SoaError, match="An open wave is already called “PILOT”"):
        wave_create(actor=people["op2"], name="PILOT", direction=WaveDirection.TO_ON_PREM)
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.CANCELLED)
    assert wave_create(actor=people["op2"], name="PILOT", direction=WaveDirection.TO_CLOUD).pk != wave.pk


def test_update_changes_a_draft_and_keeps_what_is_not_given(people):
    wave = new_wave(people["op"], batch_size=10)
    start = timezone.now() + dt.timedelta(days=1)
    wave = wave_update(actor=people["op2"], wave_id=wave.pk, description="night run", window_start=start,
                       window_end=start + dt.timedelta(hours=4), required_approvals=2)  # fmt: skip
    assert (wave.batch_size, wave.description, wave.required_approvals, wave.version) == (10, "night run", 2, 2)
    event = last_event("soa.wave.updated", wave)
    assert event.before["required_approvals"] == 1 and event.after["required_approvals"] == 2
    with pytest.raises(SoaError, match="must end after it starts"):
        wave_update(actor=people["op"], wave_id=wave.pk, window_end=start - dt.timedelta(hours=1))
    wave_create(actor=people["op"], name="Other", direction=WaveDirection.TO_CLOUD)
    with pytest.raises(SoaError, match="already called “other”"):
        wave_update(actor=people["op"], wave_id=wave.pk, name="other")


def test_update_refuses_a_submitted_wave_and_says_how(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.SUBMITTED)
    with pytest.raises(SoaError, match=r"is submitted; only a draft can be changed \(withdraw it to a draft first\)"):
        wave_update(actor=people["op"], wave_id=wave.pk, batch_size=5)


def test_unknown_wave_is_named(people):
    with pytest.raises(SoaError, match="There is no pilot wave #424242"):
        wave_update(actor=people["op"], wave_id=424242, batch_size=5)


# -- picking mailboxes by id ------------------------------------------------------------------------------------


def test_add_members_ignores_duplicates_and_existing_members_and_audits_the_ids(people):
    ann, bob, cid = make_mailbox("Ann Archer"), make_mailbox("Bob Baker"), make_mailbox("Cid Cole")
    wave = new_wave(people["op"], ann)
    result = wave_add_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=[bob.pk, ann.pk, bob.pk, cid.pk])
    assert (result.changed, result.unchanged) == (2, 1)
    assert _member_ids(wave) == {ann.pk, bob.pk, cid.pk}
    event = last_event("soa.wave.members_added", wave)
    assert event.after["added_mailbox_ids"] == [bob.pk, cid.pk]
    assert (event.before["members"], event.after["members"]) == (1, 3)
    assert WaveMember.objects.get(wave=wave, mailbox=bob).added_by == people["op"]
    wave.refresh_from_db()
    assert wave.selection[-1] == {"how": "picked", "count": 3, "added": 2, "already_members": 1}


def test_add_members_again_changes_nothing_and_writes_no_event(people):
    ann = make_mailbox("Ann Archer")
    wave = new_wave(people["op"], ann)
    before = len(events("soa.wave.members_added"))
    assert wave_add_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=[ann.pk]).changed == 0
    assert len(events("soa.wave.members_added")) == before


def test_unknown_and_out_of_scope_ids_are_named_and_nothing_is_added(people):
    ann, cid = make_mailbox("Ann Archer", SALES), make_mailbox("Cid Cole", FINANCE)
    wave = new_wave(people["sales_op"])
    with pytest.raises(SoaError) as refused:
        wave_add_members(actor=people["sales_op"], wave_id=wave.pk, mailbox_ids=[ann.pk, cid.pk, 999999])
    assert str(refused.value) == (
        "Nothing was added: no mailbox has id 999999; outside your wave-building scope: cid.cole@corp.example.com."
    )
    assert _member_ids(wave) == set()
    wave_add_members(actor=people["sales_op"], wave_id=wave.pk, mailbox_ids=[ann.pk])
    assert _member_ids(wave) == {ann.pk}


@pytest.mark.parametrize("ids", [[], ["x"], ["9223372036854775808"], ["0"], ["-3"]])  # 2**63: the fuzz's 500
def test_add_members_needs_ids(people, ids):
    wave = new_wave(people["op"])
    with pytest.raises(SoaError, match="at least one mailbox|whole numbers"):
        wave_add_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=ids)


@pytest.mark.parametrize("who", ["approver", "helpdesk"])
def test_only_builders_add_members(people, who):
    ann = make_mailbox("Ann Archer")
    wave = new_wave(people["op"])
    with pytest.raises(SoaError, match="do not allow building"):
        wave_add_members(actor=people[who], wave_id=wave.pk, mailbox_ids=[ann.pk])


@pytest.mark.parametrize("state", [s for s in WaveState if s != WaveState.DRAFT])
def test_members_change_only_in_a_draft(people, state):
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    wave = new_wave(people["op"], ann)
    PilotWave.objects.filter(pk=wave.pk).update(state=state)
    label = WaveState(state).label.lower()
    calls = [
        lambda: wave_add_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=[bob.pk]),
        lambda: wave_add_by_filter(actor=people["op"], wave_id=wave.pk, ou=SALES),
        lambda: wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text=bob.upn),
        lambda: wave_remove_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=[ann.pk]),
    ]
    for call in calls:
        with pytest.raises(SoaError, match=f"is {label}; its members can only change while it is a draft"):
            call()
    assert _member_ids(wave) == {ann.pk}


# -- by filter ---------------------------------------------------------------------------------------------------


def test_add_by_filter_takes_the_source_authority_and_the_actors_scope(people):
    ann = make_mailbox("Ann Archer", SALES, department="Sales")
    make_mailbox("Bob Baker", SALES, authority=Authority.CLOUD)  # already moved: not the source authority
    payroll = make_mailbox("Pat Payne", f"OU=Payroll,{FINANCE}")
    wave = new_wave(people["sales_op"])
    result = wave_add_by_filter(actor=people["sales_op"], wave_id=wave.pk, ou="OU=Corp,DC=corp,DC=example,DC=com")
    assert result.changed == 1 and _member_ids(wave) == {ann.pk}  # Finance is outside Sally's scope
    wave.refresh_from_db()
    assert wave.selection[-1]["filters"] == {"ou": "OU=Corp,DC=corp,DC=example,DC=com", "authority": "ON_PREM"}
    assert last_event("soa.wave.members_added", wave).after["how"]["how"] == "filter"
    other = new_wave(people["op"], name="Finance")
    wave_add_by_filter(actor=people["op"], wave_id=other.pk, ou=FINANCE)
    assert _member_ids(other) == {payroll.pk}


def test_add_by_filter_uses_department_type_search_and_explicit_authority(people):
    ann = make_mailbox("Ann Archer", department="Sales")
    bob = make_mailbox("Bob Baker", department="Sales", authority=Authority.CLOUD)
    room = make_mailbox("Board Room", recipient_type_details="RoomMailbox")
    wave = new_wave(people["op"], direction=WaveDirection.TO_ON_PREM)
    wave_add_by_filter(actor=people["op"], wave_id=wave.pk, department="sales")
    assert _member_ids(wave) == {bob.pk}  # back to AD: the cloud-managed ones
    wave_add_by_filter(actor=people["op"], wave_id=wave.pk, department="SALES", authority="")
    assert _member_ids(wave) == {ann.pk, bob.pk}
    wave_add_by_filter(actor=people["op"], wave_id=wave.pk, recipient_type="RoomMailbox", authority="")
    assert room.pk in _member_ids(wave)
    fresh = new_wave(people["op"], name="Search")
    wave_add_by_filter(actor=people["op"], wave_id=fresh.pk, query="ann")
    assert _member_ids(fresh) == {ann.pk}


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({}, "Choose at least one filter"),
        ({"authority": ""}, "Choose at least one filter"),
        ({"ou": "not a dn"}, "not a valid distinguished name"),
        ({"query": "a", "authority": "MARS"}, "Unknown authority"),
    ],
)
def test_add_by_filter_refuses_empty_or_bad_filters(people, filters, message):
    make_mailbox("Ann Archer")
    wave = new_wave(people["op"])
    with pytest.raises(SoaError, match=message):
        wave_add_by_filter(actor=people["op"], wave_id=wave.pk, **filters)
    assert _member_ids(wave) == set()


# -- from a CSV list -----------------------------------------------------------------------------------------------


def test_csv_with_header_comments_blank_lines_prefixes_and_any_address(people):
    ann = make_mailbox("Ann Archer", aliases=("sales-team@corp.example.com",))
    bob, cid = make_mailbox("Bob Baker"), make_mailbox("Cid Cole")
    text = (
        "\ufeffUserPrincipalName,Mode\n"
        "# pilot list from HR\n"
        "\n"
        "ANN.ARCHER@corp.example.com,Enable\n"
        '"SMTP:Bob.Baker@corp.example.com",Enable\n'
        "  cid.cole@corp.example.com  \n"
    )
    result = wave_add_from_csv(actor=people["op"], wave_id=new_wave(people["op"]).pk, text=text)
    assert result.changed == 3 and _member_ids(result.wave) == {ann.pk, bob.pk, cid.pk}
    assert result.wave.selection[-1] == {"how": "csv", "lines": 3, "added": 3, "already_members": 0}
    # a secondary alias finds its mailbox; a mailbox already in the wave is left as it is
    again = wave_add_from_csv(actor=people["op"], wave_id=result.wave.pk, text="sales-team@corp.example.com\n")
    assert (again.changed, again.unchanged) == (0, 1)


def test_csv_identity_column_is_found_by_its_header(people):
    ann = make_mailbox("Ann Archer")
    wave = new_wave(people["op"])
    wave_add_from_csv(
        actor=people["op"], wave_id=wave.pk, text="Name;x,Primary SMTP Address\nAnn,ann.archer@corp.example.com\n"
    )
    assert _member_ids(wave) == {ann.pk}


def test_every_bad_line_is_reported_with_its_number_and_nothing_is_added(people):
    make_mailbox("Ann Archer", SALES)
    make_mailbox("Cid Cole", FINANCE)
    make_mailbox("Dee Dunn", SALES, aliases=("shared@corp.example.com",))
    make_mailbox("Eve Ely", SALES, aliases=("shared@corp.example.com",))
    wave = new_wave(people["sales_op"])
    text = "\n".join(
        [
            "# wave list",  # 1
            "ann.archer@corp.example.com",  # 2 fine
            "nobody@corp.example.com",  # 3 unknown
            "cid.cole@corp.example.com",  # 4 outside Sally's scope
            "shared@corp.example.com",  # 5 two mailboxes have it
            "smtp:ANN.ARCHER@corp.example.com",  # 6 same mailbox as line 2
            "just text",  # 7 not an address
            "smtp:",  # 8
        ]
    )
    with pytest.raises(CsvImportError) as refused:
        wave_add_from_csv(actor=people["sales_op"], wave_id=wave.pk, text=text)
    problems = [(p.line, p.reason) for p in refused.value.problems]
    assert problems == [
        (3, "unknown: no mailbox has this UPN or address"),
        (4, "outside your wave-building scope"),
        (5, "ambiguous: 2 mailboxes have this address"),
        (6, "duplicate: the same mailbox as line 2"),
        (7, "not a UPN or email address"),
        (8, "not a UPN or email address"),
    ]
    message = str(refused.value)
    assert message.startswith("6 lines of the list cannot be used, so nothing was added; fix them")
    assert "line 3: 'nobody@corp.example.com': unknown" in message and "line 6:" in message
    assert _member_ids(wave) == set()
    assert not events("soa.wave.members_added", wave)


def test_first_line_that_is_neither_address_nor_known_header_gets_a_hint(people):
    make_mailbox("Ann Archer")
    wave = new_wave(people["op"])
    with pytest.raises(CsvImportError) as refused:
        wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text="Who,When\nann.archer@corp.example.com,now\n")
    (problem,) = refused.value.problems
    assert problem.line == 1 and "if this is a header, name the identity column UserPrincipalName" in problem.reason


def test_x500_addresses_are_matched_by_type(people):
    ann = make_mailbox("Ann Archer")
    ann.addresses.create(prefix="x500", address="/o=exchangelabs/cn=recipients/cn=ann", is_primary=False)
    wave = new_wave(people["op"])
    wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text="X500:/o=ExchangeLabs/cn=Recipients/cn=ann\n")
    assert _member_ids(wave) == {ann.pk}


@pytest.mark.parametrize("text", ["", "\n# only a comment\n\n"])
def test_an_empty_list_is_refused(people, text):
    wave = new_wave(people["op"])
    with pytest.raises(SoaError, match="The list is empty"):
        wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text=text)


# -- removing ----------------------------------------------------------------------------------------------------


def test_remove_members_all_or_nothing_and_audited(people):
    ann, bob, cid = make_mailbox("Ann Archer"), make_mailbox("Bob Baker"), make_mailbox("Cid Cole", FINANCE)
    wave = new_wave(people["op"], ann, bob, cid)
    with pytest.raises(SoaError, match=r"Nothing was removed: not members of this wave: mailbox id 999999"):
        wave_remove_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=[ann.pk, 999999])
    with pytest.raises(SoaError, match="outside your wave-building scope: cid.cole@corp.example.com"):
        wave_remove_members(actor=people["sales_op"], wave_id=wave.pk, mailbox_ids=[ann.pk, cid.pk])
    assert _member_ids(wave) == {ann.pk, bob.pk, cid.pk}
    result = wave_remove_members(actor=people["sales_op"], wave_id=wave.pk, mailbox_ids=[ann.pk])
    assert result.changed == 1 and _member_ids(wave) == {bob.pk, cid.pk}
    event = last_event("soa.wave.members_removed", wave)
    assert event.actor == people["sales_op"] and event.after["removed_mailbox_ids"] == [ann.pk]
    assert (event.before["members"], event.after["members"]) == (3, 2)
