"""Pre-flight and the way a mailbox's two sides were paired (writeback/inventory_pairing.py)."""

import pytest

from soa.choices import Pairing
from soa.preflight import Code
from soa.services.waves import wave_preflight
from tests.soa.test_wave_support import cast, make_mailbox, new_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def _warnings(people, mailbox) -> set[str]:
    wave = new_wave(people["op"], mailbox)
    report = wave_preflight(actor=people["op"], wave_id=wave.pk)
    assert not report.members[mailbox.pk].blocking
    return {f.code for f in report.members[mailbox.pk].warnings}


@pytest.mark.parametrize("pairing", [Pairing.UPN, Pairing.SMTP])
def test_a_pair_made_by_name_is_a_warning_the_approver_must_acknowledge(people, pairing):
    """A UPN or primary SMTP match is not an identifier: Microsoft pairs on the sourceAnchor and the Entra object id
    (exchange-facts §8), so a name match may join two different people and pre-flight says so."""
    mailbox = make_mailbox("Ann Archer", pairing=pairing)
    assert Code.WEAK_PAIRING in _warnings(people, mailbox)
    wave = new_wave(people["op"], mailbox, name="Weak")
    assert Code.WEAK_PAIRING in wave_preflight(actor=people["op"], wave_id=wave.pk).acknowledge()


@pytest.mark.parametrize("pairing", [Pairing.DIRECTORY_ID, Pairing.GRAPH])
def test_a_pair_made_by_identifier_raises_no_warning(people, pairing):
    mailbox = make_mailbox("Ben Baker", pairing=pairing)
    assert Code.WEAK_PAIRING not in _warnings(people, mailbox)
