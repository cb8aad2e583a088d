"""What "revert without loss" costs: a rollback wave back to AD (copy into AD first) against the to-cloud wave.

Everything is real, set up as bench_wave.py does: a private directory (slapd), the Exchange Online emulator over
HTTPS with throttling off, a private Redis and the configured database (SQLite unless DATABASE_URL says otherwise),
with the inventory imported first. Waves are built, submitted, approved and started through the portal's services.

1. Baseline: a wave of ``--members`` mailboxes to the cloud, flipped by the real runner (RQ SimpleWorker, burst
   mode). Each flip is Set-Mailbox plus its confirming Get-Mailbox.
2. Cloud edits: every moved mailbox then gets an edit that exists only in Exchange Online (a CustomAttribute and one
   added proxy address) through the real ExchangeOnlineClient.set_mailbox (verify=True), so every revert really
   writes into AD.
3. The figure: the rollback of that wave (wave_rollback_create), through the same runner with the copy into AD on
   (the default path). Per member, before the flag goes back: Get-Mailbox, a read of the AD user's Exchange
   attributes, apply_desired (read, minimal LDAP modify, verifying re-read), a read-back and comparison; then
   Set-Mailbox and its confirming Get-Mailbox.
4. Unless ``--no-unsafe``: a second to-cloud wave of as many other mailboxes (a second baseline sample), edited the
   same way and rolled back with copy_to_ad=False, in-process (wave_jobs.run_batch loops). That is the UNSAFE path,
   used here only to isolate what the copy costs; nothing in the product passes copy_to_ad=False.
5. One Entra Connect sync tick (exchange.sync()), then every member of the copying rollback is checked: its cloud
   edits and every other Exchange attribute survived, and AD holds the edits (a sample read over LDAP). The unsafe
   rollback's members are expected to have lost their edits to the same tick; if they did not, the check proves
   nothing and the script fails.

Flips/s are measured over the flips (first member's start to last member's end, from the member rows). EXO request
counts are the emulator's own counters; LDAP request counts are the runner's DirectoryClient's own counters.

    .venv/bin/python bench/bench_revert.py [--members 2000] [--users 0] [--no-unsafe]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_wave import (  # noqa: E402
    SEED_CLOUD_MANAGED_SHARE,
    _flip_rate,
    _movable,
    _people,
    _start_wave,
    _work,
    bench_tenant,
    start_bench,
)
from bench.common import Figure, load_line, timed  # noqa: E402

EDITED_ATTRIBUTE = "CustomAttribute9"  # the seed edits CustomAttribute10 in the cloud; this one is ours alone
EDIT_THREADS = 4
VOLATILE = {"WhenChangedUTC", "IsExchangeCloudManaged"}  # change on every write, or are the flag itself
AD_SAMPLE = 50
LDAP_REQUESTS: Counter[str] = Counter()


def _count_ldap_requests() -> None:
    """Add each DirectoryClient's own request counts (bind, search, modify) to LDAP_REQUESTS when it is closed:
    the runner opens one per batch back to AD and closes it at the batch's end. Nothing else changes."""
    from writeback.directory import DirectoryClient

    close = DirectoryClient.close

    def counting_close(self) -> None:
        counted = getattr(self, "_bench_counted", Counter())
        LDAP_REQUESTS.update(self.requests - counted)
        self._bench_counted = Counter(self.requests)
        close(self)

    DirectoryClient.close = counting_close


def _to_cloud(people, exchange, name: str, ids: list[int]) -> dict:
    before = exchange.counters()
    wave_id = _start_wave(people, name, ids)
    wall = timed(_work)
    after = exchange.counters()
    rate, span = _flip_rate(wave_id, exchange, ids)
    return {"wave_id": wave_id, "rate": rate, "span": span, "wall": wall, **_exo_delta(before, after)}


def _exo_delta(before: dict, after: dict) -> dict:
    by_cmdlet = {
        cmdlet: after["by_cmdlet"].get(cmdlet, 0) - before["by_cmdlet"].get(cmdlet, 0)
        for cmdlet in ("Get-Mailbox", "Set-Mailbox")
    }
    return {
        "requests": after["invoke_command"] - before["invoke_command"],
        "throttled": after["throttled"] - before["throttled"],
        "by_cmdlet": by_cmdlet,
    }


def _edit_in_the_cloud(exchange, ids: list[int], stamp: str) -> dict[str, tuple[str, str]]:
    """A cloud-only edit on each mailbox through the real client (Set-Mailbox + confirming Get-Mailbox), a few
    threads with a client each. Returns exo_object_id -> (attribute value, added proxy address)."""
    from soa.models import Mailbox
    from writeback.exchange import ExchangeConfig, ExchangeOnlineClient

    local = threading.local()
    edits = {
        str(guid): (f"bench-revert {stamp} {pk}", f"smtp:revert-{stamp}-{pk}@{exchange.mail_domain}")
        for pk, guid in Mailbox.objects.filter(pk__in=ids).values_list("pk", "exo_object_id")
    }

    def edit(item: tuple[str, tuple[str, str]]) -> None:
        if not hasattr(local, "client"):
            local.client = ExchangeOnlineClient(ExchangeConfig.from_settings())
        identity, (value, address) = item
        result = local.client.set_mailbox(
            identity, verify=True, **{EDITED_ATTRIBUTE: value}, EmailAddresses={"Add": [address]}
        )
        if not result.changed:
            raise SystemExit(f"the cloud edit of {identity} changed nothing")

    with ThreadPoolExecutor(EDIT_THREADS) as pool:
        list(pool.map(edit, edits.items()))
    return edits


def _holds(record: dict, edit: tuple[str, str]) -> bool:
    value, address = edit
    return record.get(EDITED_ATTRIBUTE) == value and address.lower() in {a.lower() for a in record["EmailAddresses"]}


def _comparable(record: dict) -> dict:
    from soa.values import exo_values

    values = {name: value for name, value in exo_values(record).items() if name not in VOLATILE}
    return {name: sorted(value) if isinstance(value, list) else value for name, value in values.items()}


def _by_object(exchange, guids) -> dict[str, dict]:
    """The emulator's stored records (admin endpoint: no throttle, no counters) of these mailboxes."""
    wanted = set(guids)
    return {m["ExternalDirectoryObjectId"]: m for m in exchange.mailboxes() if m["ExternalDirectoryObjectId"] in wanted}


def _start_rollback(people, wave_id: int, expected: int) -> int:
    """wave_rollback_create on the finished wave, then submit, approve (one approval) and start; batch queued."""
    from soa.choices import MemberState, WaveDirection, WaveState
    from soa.models import WaveMember
    from soa.services.approvals import wave_approve
    from soa.services.wave_rollback import wave_rollback_create
    from soa.services.wave_run import wave_start
    from soa.services.waves import wave_submit

    rollback = wave_rollback_create(actor=people["op"], wave_id=wave_id)
    assert rollback.direction == WaveDirection.TO_ON_PREM, rollback.direction
    wave_submit(actor=people["op"], wave_id=rollback.pk)
    wave_approve(actor=people["approver"], wave_id=rollback.pk, acknowledge_warnings=True)
    rollback = wave_start(actor=people["op2"], wave_id=rollback.pk)
    assert rollback.state == WaveState.RUNNING, rollback.state
    pending = WaveMember.objects.filter(wave=rollback, state=MemberState.PENDING).count()
    if pending != expected:
        raise SystemExit(f"pre-flight left {pending} of {expected} rollback members to flip; the figure needs all")
    return rollback.pk


def _run_in_process_unsafe(wave_id: int) -> None:
    """The UNSAFE variant: the queued batch is dropped and the batches run here with copy_to_ad=False."""
    import django_rq

    from writeback import wave_jobs

    django_rq.get_queue(wave_jobs.QUEUE).empty()
    while True:
        counts = wave_jobs.run_batch(wave_id, copy_to_ad=False)
        if counts["FAILED"] or counts["PENDING"] or counts["released"]:
            raise SystemExit(f"the unsafe rollback batch did not flip every member: {counts}")
        if not counts["claimed"]:
            break
    if wave_jobs.settle(wave_id) != "completed":
        raise SystemExit("the unsafe rollback did not complete")


def _back_rate(wave_id: int, exchange, ids: list[int]) -> tuple[float, float]:
    """Check the rollback flipped every member back (rows and Exchange agree); (flips/s over the flips, span s)."""
    from django.db.models import Max, Min

    from soa.choices import Authority, MemberState, WaveState
    from soa.models import Mailbox, PilotWave, WaveMember

    wave = PilotWave.objects.get(pk=wave_id)
    members = WaveMember.objects.filter(wave_id=wave_id)
    done = members.filter(state=MemberState.DONE).count()
    if wave.state != WaveState.COMPLETED or done != len(ids):
        errors = list(members.exclude(state=MemberState.DONE).values_list("last_error", flat=True)[:3])
        raise SystemExit(f"rollback {wave.name} ended {wave.state} with {done} of {len(ids)} done; e.g. {errors}")
    if Mailbox.objects.filter(pk__in=ids, authority=Authority.ON_PREM).count() != len(ids):
        raise SystemExit("some rolled-back mailboxes are not recorded as AD-managed")
    guids = {str(g) for g in Mailbox.objects.filter(pk__in=ids).values_list("exo_object_id", flat=True)}
    still_cloud = [g for g, m in _by_object(exchange, guids).items() if m.get("IsExchangeCloudManaged")]
    if still_cloud or len(_by_object(exchange, guids)) != len(guids):
        raise SystemExit(f"{len(still_cloud)} rolled-back members are still cloud-managed in Exchange Online")
    span = members.aggregate(first=Min("started_at"), last=Max("finished_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    return len(ids) / seconds, seconds


def _rollback(people, exchange, wave_id: int, ids: list[int], *, unsafe: bool) -> dict:
    before, ldap_before = exchange.counters(), Counter(LDAP_REQUESTS)
    rollback_id = _start_rollback(people, wave_id, len(ids))
    wall = timed(lambda: _run_in_process_unsafe(rollback_id) if unsafe else _work())
    after = exchange.counters()
    rate, span = _back_rate(rollback_id, exchange, ids)
    return {"rate": rate, "span": span, "wall": wall, "ldap": LDAP_REQUESTS - ldap_before, **_exo_delta(before, after)}


def _check_ad(ids: list[int], edits: dict[str, tuple[str, str]], stamp: str) -> int:
    """AD holds the cloud edits after the copying rollback: a random sample read over LDAP; returns its size."""
    from soa.attributes import BY_EXO
    from soa.models import Mailbox
    from writeback.directory import DirectoryClient, DirectoryConfig

    ad_name = BY_EXO[EDITED_ATTRIBUTE].ad
    rows = list(Mailbox.objects.filter(pk__in=ids).values_list("exo_object_id", "ad_guid"))
    sample = random.Random(stamp).sample(rows, min(AD_SAMPLE, len(rows)))
    with DirectoryClient(DirectoryConfig.from_settings()) as directory:
        for exo_id, ad_guid in sample:
            value, address = edits[str(exo_id)]
            entry = directory.read_exchange_attributes(ad_guid)
            if entry[ad_name] != value or address.lower() not in {a.lower() for a in entry["proxyAddresses"]}:
                raise SystemExit(f"AD does not hold the cloud edit of {exo_id} after the copying rollback: {entry}")
    return len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000, help="members of each wave (to the cloud, and back)")
    parser.add_argument("--users", type=int, default=0, help="directory users (default: enough for every wave)")
    parser.add_argument("--no-unsafe", action="store_true", help="skip the copy_to_ad=False variant")
    args = parser.parse_args()
    sets = 1 if args.no_unsafe else 2
    needed = args.members * sets
    users = args.users or math.ceil(needed / (1 - SEED_CLOUD_MANAGED_SHARE) * 1.05) + 50
    title = "bench_revert: a rollback wave back to AD (cloud values copied into AD first) against the to-cloud wave"
    start_bench(title, args, users, name="revert")
    from soa.models import WAVE_MAX_BATCH_SIZE, WAVE_MAX_RATE, Mailbox

    _count_ldap_requests()
    began = time.perf_counter()
    with bench_tenant(users, pacing=True) as exchange:
        print(
            f"waves: batch size {WAVE_MAX_BATCH_SIZE}, wave rate {WAVE_MAX_RATE:g} flips/s (the portal's maximum, "
            "inherited by each rollback); emulator throttling off"
        )
        people = _people()
        stamp = dt.datetime.now().strftime("%H%M%S")
        taken: set[int] = set()
        groups = []
        for label in ("A", "B")[:sets]:
            ids = _movable(args.members, taken)
            taken.update(ids)
            groups.append((label, ids))

        # 1. Baseline: to the cloud (one wave per set of members; each is a sample).
        to_cloud = {label: _to_cloud(people, exchange, f"Bench revert {label} {stamp}", ids) for label, ids in groups}

        # 2. Cloud-only edits on every moved mailbox, through the real client.
        edits: dict[str, tuple[str, str]] = {}
        edit_seconds = timed(lambda: [edits.update(_edit_in_the_cloud(exchange, ids, stamp)) for _, ids in groups])
        before_rollback = _by_object(exchange, edits)
        unedited = [guid for guid, edit in edits.items() if not _holds(before_rollback[guid], edit)]
        if unedited or len(before_rollback) != len(edits):
            raise SystemExit(f"{len(unedited)} mailboxes do not show their cloud edit before the rollback")

        # 3. The figure: the rollback with the copy into AD, through the runner.
        label_a, ids_a = groups[0]
        back = _rollback(people, exchange, to_cloud[label_a]["wave_id"], ids_a, unsafe=False)
        # 4. The UNSAFE variant, only to isolate the copy's cost.
        unsafe = None
        if sets == 2:
            label_b, ids_b = groups[1]
            unsafe = _rollback(people, exchange, to_cloud[label_b]["wave_id"], ids_b, unsafe=True)

        # 5. One sync tick: the copying rollback's members keep everything; the unsafe one's lose their edits.
        sync_counts: dict = {}
        sync_seconds = timed(lambda: sync_counts.update(exchange.sync()))
        guids_a = {str(g) for g in Mailbox.objects.filter(pk__in=ids_a).values_list("exo_object_id", flat=True)}
        after_sync = _by_object(exchange, edits)
        lost = [g for g in guids_a if not _holds(after_sync[g], edits[g])]
        changed = [g for g in guids_a if _comparable(after_sync[g]) != _comparable(before_rollback[g])]
        if lost or changed:
            raise SystemExit(
                f"REVERT LOST DATA: after the sync tick {len(lost)} of {len(guids_a)} members of the copying "
                f"rollback lost their cloud edit and {len(changed)} differ from the cloud before the rollback, "
                f"e.g. {(lost or changed)[:3]}"
            )
        ad_checked = _check_ad(ids_a, edits, stamp)
        unsafe_lost = None
        if unsafe is not None:
            guids_b = set(edits) - guids_a
            unsafe_lost = sum(1 for g in guids_b if not _holds(after_sync[g], edits[g]))
            if unsafe_lost == 0:
                raise SystemExit(
                    "the sync tick kept the unsafe rollback's edits too: the survival check proves nothing"
                )

    n = args.members
    baseline = Figure("to the cloud (baseline)", "flips/s", [to_cloud[label]["rate"] for label, _ in groups])
    copying = Figure("back to AD, copy into AD on (runner)", "flips/s", [back["rate"]])
    edits_count = len(edits)
    print(
        f"cloud edits: {edits_count:,} mailboxes ({EDITED_ATTRIBUTE} + one added proxy address each) through "
        f"ExchangeOnlineClient.set_mailbox(verify=True), {EDIT_THREADS} threads: {edit_seconds:.1f} s, "
        f"{edits_count / edit_seconds:,.1f} edits/s"
    )
    print(baseline.row() + f"  ({n:,} members each)")
    print(copying.row() + f"  ({n:,} members)")
    print(f"{'ratio back-to-AD / to-cloud':<52} {copying.median / baseline.median:>12.3f}")
    if unsafe is not None:
        unsafe_figure = Figure("back to AD, copy_to_ad=False (UNSAFE, measuring)", "flips/s", [unsafe["rate"]])
        print(unsafe_figure.row() + f"  ({n:,} other members, in-process run_batch)")
        print(f"{'ratio UNSAFE back-to-AD / to-cloud':<52} {unsafe['rate'] / baseline.median:>12.3f}")
        copy_ms = 1000 / back["rate"] - 1000 / unsafe["rate"]
        print(
            f"{'cost of the copy per member':<52} {copy_ms:>12.2f} ms  "
            f"({1000 / back['rate']:.2f} ms with it, {1000 / unsafe['rate']:.2f} ms without)"
        )
    print("EXO requests per member (emulator counters; Get-Mailbox / Set-Mailbox; 429s):")
    rows = [(f"to the cloud ({label})", to_cloud[label]) for label, _ in groups] + [("back to AD, copy on", back)]
    if unsafe is not None:
        rows.append(("back to AD, copy_to_ad=False (UNSAFE)", unsafe))
    for name, result in rows:
        per = result["requests"] / n
        gets, sets_ = result["by_cmdlet"]["Get-Mailbox"], result["by_cmdlet"]["Set-Mailbox"]
        print(f"  {name:<50} {per:>12.2f}  ({gets / n:.2f} / {sets_ / n:.2f}; {result['throttled']})")
    ldap = back["ldap"]
    print(
        f"LDAP requests per member, back to AD with the copy (DirectoryClient counters): "
        f"search {ldap['search'] / n:.2f}, modify {ldap['modify'] / n:.2f}, bind {ldap['bind']} in all"
    )
    print(
        f"sync tick: {sync_seconds:.1f} s, {sync_counts}; after it all {len(guids_a):,} members of the copying "
        f"rollback kept their cloud edit and every other Exchange attribute (AD read back on {ad_checked})"
        + (f"; the UNSAFE rollback lost the edit on {unsafe_lost:,} of {n:,}" if unsafe_lost is not None else "")
    )
    print(
        f"spans (first start to last end): to the cloud "
        f"{', '.join(format(to_cloud[label]['span'], '.1f') for label, _ in groups)} s; "
        f"back with copy {back['span']:.1f} s (worker wall {back['wall']:.1f} s)"
        + (f"; UNSAFE {unsafe['span']:.1f} s" if unsafe is not None else "")
    )
    print(f"total wall time: {time.perf_counter() - began:.1f} s; after: {load_line()}")


if __name__ == "__main__":
    main()
