"""The demo's pilot waves: one completed, one awaiting approval, one draft (`make demo`, after the inventory import
and the demo accounts). Built only through the portal's own services, by the demo's people, four-eyes included:

- "Finance pilot": the operator builds and submits it, the approver approves it, the operator starts it, and the
  real runner flips its members in Exchange Online here, batch by batch (no worker needed); an incremental
  inventory import then reads the result back.
- "Support pilot": built and submitted with its pre-flight; it waits for an approver.
- "Sales pilot": a draft of a few mailboxes.

Each wave takes on-premises-mastered user mailboxes of its own OU. When any wave exists, nothing is done, so a
restarted demo keeps what people did with it. The batches of the completed wave were queued too (the runner
always queues the next batch); a worker that delivers them later finds nothing left to claim.

    python -m sandbox.demo_waves   # with the demo's environment (sandbox.demo runs it)
"""

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.directory.users import users_dn

# (wave, OU under OU=Corp, mailboxes wanted)
COMPLETED = ("Finance pilot", "Finance", 25)
AWAITING = ("Support pilot", "Support", 15)
DRAFT = ("Sales pilot", "Sales", 5)


@dataclass(frozen=True)
class DemoPeople:
    """Usernames of the demo accounts (portal/management/commands/demo_accounts.py) that act on the waves."""

    operator: str = "operator"  # builds, submits and starts
    approver: str = "approver"  # approves: neither created, filled nor submitted the wave


def _movable(ou: str, count: int) -> list[int]:
    """Ids of up to ``count`` user mailboxes of ``ou`` that a wave to the cloud can move, in UPN order."""
    from django.conf import settings

    from portal.dn import normalize_dn
    from soa.choices import Authority
    from soa.models import Mailbox

    ou_dn = f"OU={ou},{users_dn(settings.LDAP_BASE_DN)}"
    movable = {"authority": Authority.ON_PREM, "is_dir_synced": True, "in_exo": True, "in_ad": True,
               "has_drift": False, "recipient_type_details": "UserMailbox"}  # fmt: skip
    mailboxes = Mailbox.objects.filter(ou_norm=normalize_dn(ou_dn), **movable).order_by("upn")
    ids = list(mailboxes.values_list("pk", flat=True)[:count])
    if not ids:
        raise RuntimeError(f"No mailbox of {ou_dn} can move to the cloud; was the inventory imported?")
    return ids


def _draft(actor, name: str, ou: str, count: int, description: str):
    from soa.choices import WaveDirection
    from soa.services.wave_members import wave_add_members
    from soa.services.waves import wave_create

    wave = wave_create(
        actor=actor, name=name, direction=WaveDirection.TO_CLOUD, description=description, batch_size=10, max_rate=10.0
    )
    wave_add_members(actor=actor, wave_id=wave.pk, mailbox_ids=_movable(ou, count))
    wave.refresh_from_db()
    return wave


def _run_to_the_end(wave_id: int) -> None:
    """Run the wave's batches in this process with the real runner until it is no longer running."""
    from soa.choices import WaveState
    from soa.models import PilotWave
    from writeback.jobs.waves import wave_run_job

    batches = PilotWave.objects.get(pk=wave_id).members.count() + 1  # more than it can take
    for _ in range(batches):
        if PilotWave.objects.get(pk=wave_id).state != WaveState.RUNNING:
            return
        wave_run_job(wave_id)
    raise RuntimeError(f"Wave #{wave_id} is still running after {batches} batches.")


def _import_incremental() -> None:
    from writeback.inventory import inventory_run_request
    from writeback.jobs.inventory import claim, execute
    from writeback.models import InventoryRun

    run = inventory_run_request(actor=None, mode=InventoryRun.Mode.INCREMENTAL, enqueue=False)
    run = execute(claim(run.pk))
    if run.state != InventoryRun.State.DONE:
        raise RuntimeError(f"The incremental inventory import #{run.pk} failed: {run.error}")


def demo_waves_create(
    *,
    people: DemoPeople | None = None,
    completed: int = COMPLETED[2],
    awaiting: int = AWAITING[2],
    draft: int = DRAFT[2],
    say: Callable[[str], None] = print,
) -> list:
    """Create the demo's three waves (sizes as given) unless a wave exists; returns the waves created."""
    from portal.models import User
    from soa.choices import MemberState
    from soa.models import PilotWave
    from soa.services.approvals import wave_approve
    from soa.services.wave_run import wave_start
    from soa.services.waves import wave_submit

    existing = PilotWave.objects.count()
    if existing:
        say(f"Demo waves: {existing} pilot wave(s) exist already; left as they are.")
        return []
    people = people or DemoPeople()
    operator = User.objects.get(username=people.operator)
    approver = User.objects.get(username=people.approver)

    name, ou, _ = COMPLETED
    done = _draft(operator, name, ou, completed, f"First pilot: {ou} mailboxes move to Exchange Online.")
    wave_submit(actor=operator, wave_id=done.pk)
    wave_approve(actor=approver, wave_id=done.pk, reason="Pilot agreed with Finance.", acknowledge_warnings=True)
    wave_start(actor=operator, wave_id=done.pk)
    _run_to_the_end(done.pk)
    _import_incremental()
    done.refresh_from_db()
    moved = done.members.filter(state=MemberState.DONE).count()
    say(f"Demo wave “{done.name}”: {done.get_state_display().lower()}, {moved} mailboxes moved to Exchange Online.")

    name, ou, _ = AWAITING
    waiting = _draft(operator, name, ou, awaiting, f"Second pilot: {ou}.")
    waiting = wave_submit(actor=operator, wave_id=waiting.pk)
    eligible = waiting.members.filter(excluded=False).count()
    say(f"Demo wave “{waiting.name}”: awaiting approval, {eligible} mailboxes pass pre-flight.")

    name, ou, _ = DRAFT
    planned = _draft(operator, name, ou, draft, f"Next: {ou}, a few mailboxes first.")
    say(f"Demo wave “{planned.name}”: draft of {planned.members.count()} mailboxes.")
    return [done, waiting, planned]


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    demo_waves_create()
    return 0


if __name__ == "__main__":
    sys.exit(main())
