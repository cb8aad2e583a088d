"""False drift after a rollback: the rollback copies each mailbox's cloud values into AD before the flag goes back, and
the portal used to refresh only its copy of AD with what it wrote, so every member edited in the cloud showed drift on
the copied attributes (AD's new value against the cloud's as of the last import) until the next import. Both copies
are refreshed now, from the same reads the copy was made and verified with; the drift shown is the real one (none).
"""

import pytest

from soa.choices import Authority, WaveDirection, WaveState
from soa.models import Mailbox
from tests.faults.wave_support import tenant_fixtures
from tests.soa.test_wave_support import cast
from tests.writeback.test_wave_revert import edit_in_the_cloud, import_inventory, moved_to_cloud, rollback_of, run_wave

pytestmark = pytest.mark.django_db(transaction=True)

tenant, exchange = tenant_fixtures(users=12, seed=73)


def test_after_a_rollback_no_member_shows_drift_on_the_attributes_copied_from_the_cloud(exchange, make_user):
    people = cast(make_user)
    wave, mailboxes = moved_to_cloud(people, 4, "To the cloud, then back")
    edited = edit_in_the_cloud(mailboxes)  # the portal has not imported these edits
    stale = Mailbox.objects.get(pk=mailboxes[0].pk)
    assert stale.exo_values.get("CustomAttribute5") != "cloud-only 0"  # the inventory's copy predates the edit

    rollback = run_wave(people, rollback_of(people, wave))

    assert rollback.state == WaveState.COMPLETED and rollback.direction == WaveDirection.TO_ON_PREM
    for index, mailbox in enumerate(Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes]).order_by("upn")):
        assert mailbox.authority == Authority.ON_PREM
        assert mailbox.ad_values["CustomAttribute5"] == f"cloud-only {index}"
        assert mailbox.exo_values["CustomAttribute5"] == f"cloud-only {index}"
        assert mailbox.exo_values["HiddenFromAddressListsEnabled"] is True
        assert (mailbox.drift, mailbox.has_drift) == ([], False), edited[mailbox.upn]
    # An import finds what the rollback recorded: still no drift.
    import_inventory()
    assert not Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes], has_drift=True).exists()
