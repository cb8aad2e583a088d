"""A pilot wave against the emulator throttled to a known budget: flips per second against that budget, and 429s.

Everything is real: the wave is built, submitted, approved and started through the portal's services, and the
runner (writeback.wave_jobs) flips it in batches from an RQ worker (SimpleWorker, burst mode) on a private Redis,
against a private directory and the Exchange Online emulator over HTTPS, with the inventory imported into the
configured database first.

Each flip costs two EXO requests (Set-Mailbox and the confirming Get-Mailbox), so with the emulator throttled to
``--rate`` requests per second the budget is rate / 2 flips per second. The wave's own rate is set to the portal's
maximum and its batch to the largest allowed, so the budget, not the wave, is the limit. The achieved rate is
measured over the flips themselves (first flip's start to last flip's end, from the member rows); the 429s are the
emulator's own count.

Baseline, measured first in the same run: the runner's own ceiling, a smaller wave with throttling off (capped by
the wave rate the portal allows).

    .venv/bin/python bench/bench_wave.py [--members 10000] [--rate 80] [--burst 10] [--no-pacing]

``--no-pacing`` turns off the client's pacing from the Rate-Limit-* headers (EXO_RATE_LIMIT_PACING), to show the
429s it saves. PostgreSQL: set DATABASE_URL (a database the benchmark may fill; it is emptied first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Figure, load_line, machine_line, setup_django, timed  # noqa: E402

SEED_CLOUD_MANAGED_SHARE = 0.10  # sandbox.seed's default: a tenth of the mailboxes start cloud-managed


def _point_settings_at(directory, exchange, redis_url: str, *, pacing: bool) -> None:
    from django.conf import settings

    client = exchange.clients["secret"]
    values = {
        "LDAP_URL": directory.url, "LDAP_BIND_DN": directory.bind_dn, "LDAP_BASE_DN": directory.base_dn,
        "LDAP_PASSWORD_FILE": str(directory.password_file), "EXO_BASE_URL": exchange.base_url,
        "GRAPH_BASE_URL": exchange.base_url, "EXO_TENANT": exchange.tenant_id, "ENTRA_AUTHORITY": exchange.authority,
        "EXO_CA_FILE": str(exchange.ca_file),
        "ENTRA_CLIENT_ID": client["client_id"], "ENTRA_CLIENT_SECRET_FILE": client["client_secret_file"],
        "REDIS_URL": redis_url, "WAVE_QUIET_PERIOD_HOURS": 0,  # the seed has just written every mailbox
        "EXO_RATE_LIMIT_PACING": pacing,
    }  # fmt: skip
    for name, value in values.items():
        setattr(settings, name, value)
    settings.RQ_QUEUES = {name: {**config, "URL": redis_url} for name, config in settings.RQ_QUEUES.items()}


def start_bench(title: str, args: argparse.Namespace, users: int, *, name: str) -> None:
    """Set Django up, print the bench's header, and empty a database that is not a fresh SQLite file."""
    engine = setup_django(name)
    import django
    import redis
    import rq
    from django.core.management import call_command

    print(title)
    print(machine_line())
    print(f"django {django.get_version()}, rq {rq.VERSION}, redis-py {redis.__version__}; database: {engine}")
    print(f"options: {vars(args)}; directory users: {users}")
    print(f"before: {load_line()}")
    if engine != "django.db.backends.sqlite3":
        call_command("flush", interactive=False, verbosity=0)  # a fresh SQLite file needs no emptying


@contextmanager
def bench_tenant(users: int, *, pacing: bool):
    """A private Redis, directory of ``users`` and emulator (throttling off), seeded, the settings pointed at them
    and the inventory imported; yields the emulator."""
    from sandbox.directory import SandboxDirectory
    from sandbox.exchange_online import ExchangeOnlineEmulator
    from sandbox.redis_server import RedisServer
    from sandbox.seed import seed_tenant
    from writeback.inventory import inventory_run_request
    from writeback.jobs.inventory import claim, execute
    from writeback.models import InventoryRun

    began = time.perf_counter()
    with (
        RedisServer.start() as redis_server,
        SandboxDirectory.start(users=users) as directory,
        ExchangeOnlineEmulator.start(directory=directory, rate=0) as exchange,
    ):
        report = seed_tenant(directory, exchange)
        _point_settings_at(directory, exchange, redis_server.url, pacing=pacing)
        run = inventory_run_request(actor=None, mode=InventoryRun.Mode.FULL, enqueue=False)
        run = execute(claim(run.pk))
        assert run.state == InventoryRun.State.DONE, run.error
        print(f"tenant ready in {time.perf_counter() - began:.1f} s: {report}; inventory stored {run.created}")
        yield exchange


def _people() -> dict:
    from portal.models import User
    from portal.roles import Role
    from portal.services import role_assign

    people = {}
    for key, role in (("op", Role.WAVE_OPERATOR), ("op2", Role.WAVE_OPERATOR), ("approver", Role.APPROVER)):
        user = User.objects.create_user(username=f"bench-{key}-{time.time_ns()}", password=None)
        role_assign(actor=None, user=user, role=role, tenant_wide=True)
        people[key] = user
    return people


def _movable(count: int, taken: set[int]) -> list[int]:
    from soa.choices import Authority
    from soa.models import Mailbox

    candidates = Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True, is_dir_synced=True)
    ids = [pk for pk in candidates.order_by("upn").values_list("pk", flat=True) if pk not in taken][:count]
    if len(ids) < count:
        raise SystemExit(f"the tenant has only {len(ids)} mailboxes left to move; raise --users")
    return ids


def _start_wave(people: dict, name: str, mailbox_ids: list[int]) -> int:
    """Build, submit, approve (one approval) and start a wave to the cloud; its first batch is queued."""
    from soa.choices import MemberState, WaveDirection, WaveState
    from soa.models import WAVE_MAX_BATCH_SIZE, WAVE_MAX_RATE, WaveMember
    from soa.services.approvals import wave_approve
    from soa.services.wave_members import wave_add_members
    from soa.services.wave_run import wave_start
    from soa.services.waves import wave_create, wave_submit

    wave = wave_create(
        actor=people["op"], name=name, direction=WaveDirection.TO_CLOUD, required_approvals=1,
        batch_size=WAVE_MAX_BATCH_SIZE, max_rate=WAVE_MAX_RATE,
    )  # fmt: skip
    wave_add_members(actor=people["op"], wave_id=wave.pk, mailbox_ids=mailbox_ids)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave = wave_start(actor=people["op2"], wave_id=wave.pk)
    assert wave.state == WaveState.RUNNING, wave.state
    pending = WaveMember.objects.filter(wave=wave, state=MemberState.PENDING).count()
    if pending != len(mailbox_ids):
        raise SystemExit(f"pre-flight left {pending} of {len(mailbox_ids)} members to flip; the figure needs all")
    return wave.pk


def _work() -> None:
    """The real RQ worker, in burst mode, until the queue is empty; no job may fail."""
    import django_rq
    from rq import SimpleWorker

    from writeback import wave_jobs

    queue = django_rq.get_queue(wave_jobs.QUEUE)
    SimpleWorker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")
    failed = queue.failed_job_registry
    if failed.count:
        raise SystemExit(f"wave jobs failed: {[queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]}")


def _flip_rate(wave_id: int, exchange, mailbox_ids: list[int]) -> tuple[float, float]:
    """Check the wave flipped every member (rows and Exchange agree); returns (flips/s over the flips, span s)."""
    from django.db.models import Max, Min

    from soa.choices import Authority, MemberState, WaveState
    from soa.models import Mailbox, PilotWave, WaveMember

    wave = PilotWave.objects.get(pk=wave_id)
    members = WaveMember.objects.filter(wave_id=wave_id)
    done = members.filter(state=MemberState.DONE).count()
    if wave.state != WaveState.COMPLETED or done != len(mailbox_ids):
        raise SystemExit(f"wave {wave.name} ended {wave.state} with {done} of {len(mailbox_ids)} members done")
    if Mailbox.objects.filter(pk__in=mailbox_ids, authority=Authority.CLOUD).count() != len(mailbox_ids):
        raise SystemExit("some flipped mailboxes are not recorded as cloud-managed")
    objects = set(Mailbox.objects.filter(pk__in=mailbox_ids).values_list("exo_object_id", flat=True))
    in_cloud = {m["ExternalDirectoryObjectId"] for m in exchange.mailboxes() if m.get("IsExchangeCloudManaged")}
    missing = {str(guid) for guid in objects} - in_cloud
    if missing:
        raise SystemExit(f"{len(missing)} members are not cloud-managed in Exchange Online")
    span = members.aggregate(first=Min("started_at"), last=Max("finished_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    return len(mailbox_ids) / seconds, seconds


def _run_wave(people, exchange, name: str, mailbox_ids: list[int]) -> dict:
    before = exchange.counters()
    wave_id = _start_wave(people, name, mailbox_ids)
    wall = timed(_work)
    after = exchange.counters()
    rate, span = _flip_rate(wave_id, exchange, mailbox_ids)
    by_cmdlet = {
        cmdlet: after["by_cmdlet"].get(cmdlet, 0) - before["by_cmdlet"].get(cmdlet, 0)
        for cmdlet in ("Set-Mailbox", "Get-Mailbox")
    }
    return {
        "rate": rate,
        "span": span,
        "wall": wall,
        "throttled": after["throttled"] - before["throttled"],
        "requests": after["invoke_command"] - before["invoke_command"],
        "by_cmdlet": by_cmdlet,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10000, help="members of the throttled wave")
    parser.add_argument("--rate", type=float, default=80.0, help="emulator budget, requests per second")
    parser.add_argument("--burst", type=int, default=10, help="emulator bucket size (Rate-Limit-Limit)")
    parser.add_argument("--baseline-members", type=int, default=1000, help="members of each unthrottled wave")
    parser.add_argument("--repeats", type=int, default=3, help="unthrottled baseline waves")
    parser.add_argument("--users", type=int, default=0, help="directory users (default: enough for every wave)")
    parser.add_argument("--no-pacing", action="store_true", help="turn the client's Rate-Limit pacing off")
    args = parser.parse_args()
    needed = args.members + args.baseline_members * args.repeats
    users = args.users or math.ceil(needed / (1 - SEED_CLOUD_MANAGED_SHARE) * 1.05) + 50
    title = "bench_wave: a pilot wave through the real runner against the emulator throttled to a known budget"
    start_bench(title, args, users, name="wave")
    from soa.models import WAVE_MAX_BATCH_SIZE, WAVE_MAX_RATE

    began = time.perf_counter()
    with bench_tenant(users, pacing=not args.no_pacing) as exchange:
        people = _people()
        stamp = dt.datetime.now().strftime("%H%M%S")
        taken: set[int] = set()
        print(f"waves: batch size {WAVE_MAX_BATCH_SIZE}, wave rate {WAVE_MAX_RATE:g} flips/s (the portal's maximum)")

        # Baseline: the runner's own ceiling, throttling off.
        exchange.set_throttle(rate=None)
        ceiling = Figure("baseline: runner, throttling off", "flips/s")
        baseline_429 = 0
        for repeat in range(args.repeats):
            ids = _movable(args.baseline_members, taken)
            taken.update(ids)
            result = _run_wave(people, exchange, f"Bench baseline {stamp}-{repeat}", ids)
            ceiling.samples.append(result["rate"])
            baseline_429 += result["throttled"]

        # The figure: the whole wave against the budget.
        ids = _movable(args.members, taken)
        exchange.set_throttle(rate=args.rate, burst=args.burst)  # every bucket starts full
        budget = args.rate / 2
        result = _run_wave(people, exchange, f"Bench budget {stamp}", ids)
        exchange.set_throttle(rate=None)

    achieved = Figure(f"wave of {args.members:,} at the budget", "flips/s", [result["rate"]])
    print(f"emulator budget: {args.rate:g} requests/s, burst {args.burst} -> {budget:g} flips/s (2 requests a flip)")
    print(f"client pacing from Rate-Limit-* headers: {'off' if args.no_pacing else 'on'}")
    print(ceiling.row() + f"  ({args.baseline_members:,} members each; 429s: {baseline_429})")
    print(achieved.row())
    print(f"{'ratio to the budget':<52} {result['rate'] / budget:>12.3f}  (target >= 0.9)")
    print(f"{'ratio to the runner ceiling':<52} {result['rate'] / ceiling.median:>12.3f}")
    print(f"{'429 responses provoked':<52} {result['throttled']:>12,}")
    print(
        f"{'EXO requests':<52} {result['requests']:>12,}  ({result['by_cmdlet']['Set-Mailbox']:,} Set-Mailbox and "
        f"{result['by_cmdlet']['Get-Mailbox']:,} Get-Mailbox served, {result['throttled']:,} answered 429)"
    )
    print(f"{'flipping span (first start to last end)':<52} {result['span']:>12.1f} s")
    print(f"{'worker wall time (queue to empty)':<52} {result['wall']:>12.1f} s")
    print(f"total wall time: {time.perf_counter() - began:.1f} s; after: {load_line()}")


if __name__ == "__main__":
    main()
