"""Wave reads: who sees waves, their members and decisions."""

import pytest

from portal.roles import Role
from soa.selectors import consumer_applications, wave_approvals, wave_get, wave_list, wave_members
from soa.services.approvals import wave_approve
from soa.services.consumers import consumer_application_register
from tests.soa.test_wave_support import FINANCE, cast, make_mailbox, new_wave, submitted_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def test_wave_viewers_see_every_wave_with_counts_whatever_their_scope(people):
    first = submitted_wave(people["op"], make_mailbox("Ann Archer"), make_mailbox("Cid Cole", FINANCE, in_ad=False))
    second = new_wave(people["op"], name="Second")
    for who in ("op", "sales_op", "approver", "sales_approver"):
        waves = list(wave_list(user=people[who]))
        assert waves == [second, first]
        assert (waves[1].member_count, waves[1].excluded_count) == (2, 1)
    assert list(wave_list(user=people["op"], state="SUBMITTED")) == [first]
    assert wave_get(user=people["sales_approver"], pk=first.pk) == first
    assert [m.mailbox.display_name for m in wave_members(user=people["sales_op"], wave_id=first.pk)] == [
        "Ann Archer", "Cid Cole"
    ]  # fmt: skip


def test_users_without_wave_view_see_nothing(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    helpdesk = people["helpdesk"]
    assert not wave_list(user=helpdesk).exists()
    assert wave_get(user=helpdesk, pk=wave.pk) is None
    assert not wave_members(user=helpdesk, wave_id=wave.pk).exists()
    assert not wave_approvals(user=helpdesk, wave_id=wave.pk).exists()
    assert wave_get(user=people["op"], pk=999999) is None


def test_decisions_are_listed_for_wave_viewers(people, make_user):
    wave = submitted_wave(people["op"], make_mailbox("Ann Archer"), required_approvals=2)
    wave_approve(actor=people["approver"], wave_id=wave.pk, reason="fine")
    assert [(a.approver.username, a.reason) for a in wave_approvals(user=people["op"], wave_id=wave.pk)] == [
        ("anna", "fine")
    ]
    admin = make_user("root", Role.ADMIN)
    consumer_application_register(actor=admin, name="Phone book", attributes=["mail"])
    assert [a.name for a in consumer_applications(user=people["op"])] == ["Phone book"]
    assert not consumer_applications(user=people["helpdesk"]).exists()
