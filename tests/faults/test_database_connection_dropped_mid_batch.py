"""The worker's database connection dropped in the middle of a wave batch and of a writeback batch: the job fails where
it stands, what it had claimed is given back (or swept), and the work completes by itself with every mailbox flipped
and every AD value written once, one ``done`` event each, the audit chain intact.

What is realistic: on PostgreSQL (production, CI) the server ends the worker's backend, as a failover, a restart, an
``idle_session_timeout`` or a network cut does; the test does exactly that, ``pg_terminate_backend`` from a connection
of its own, at the moment the worker sends the chosen statement, so the statement meets a dead connection and psycopg
raises. SQLite has no server to lose: its nearest fault is the driver refusing a statement mid-transaction ("database
is locked" past the timeout, a disk error); there the hook raises the OperationalError the backend would, at the same
statement. The hook is Django's ``connection.execute_wrapper``, the documented instrumentation point; the worker is
RQ's, in this process, so the hook sees its statements.
"""

import re
import uuid
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import OperationalError, connection

from portal.audit import verify_chain
from portal.models import AuditEvent
from portal.roles import Role
from soa.choices import Authority, ChangeState, MemberState, WaveState
from soa.models import ChangeRequest, Mailbox, PilotWave, WaveMember
from soa.services.approvals import wave_approve
from soa.services.changes import change_request_create
from soa.services.wave_run import wave_start
from soa.services.waves import wave_submit
from tests.exchange_fixtures import private_tenant
from tests.faults.fault_stack import VirtualClock, cloud_managed, empty_queues, import_inventory
from tests.soa.test_wave_support import cast, new_wave
from tests.writeback.test_change_apply import read_ad
from writeback.models import WritebackTask

pytestmark = pytest.mark.django_db(transaction=True)

USERS = 24


@pytest.fixture(scope="module")
def tenant():
    with private_tenant(users=USERS, seed=101) as (directory, exchange, _report):
        cloud_managed(exchange, USERS // 3)
        yield directory, exchange


@pytest.fixture
def stack(tenant, settings):
    settings.WAVE_QUIET_PERIOD_HOURS = 0
    empty_queues()
    tenant[1].clear_faults()
    import_inventory()
    return tenant


def _terminate_own_backend(wrapper) -> None:
    """End the worker connection's PostgreSQL backend from another connection, and wait until it is gone."""
    import psycopg

    pid = wrapper.connection.info.backend_pid
    params = wrapper.get_connection_params()
    with psycopg.connect(**{**params, "autocommit": True}) as side:
        side.execute("SELECT pg_terminate_backend(%s)", [pid])
        while side.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            pass


@contextmanager
def connection_dropped_at(statement: str, *, occurrence: int):
    """Drop the database connection the ``occurrence``-th time (1-based) a statement matching the regular expression
    ``statement`` at its start is sent; yields the list the dropped statement is put in (empty: the drop never
    happened)."""
    seen, dropped = 0, []

    def drop(execute, sql, params, many, context):
        nonlocal seen
        if not dropped and re.match(statement, sql):
            seen += 1
            if seen == occurrence:
                dropped.append(sql)
                if connection.vendor == "postgresql":
                    _terminate_own_backend(context["connection"])
                else:
                    raise OperationalError("disk I/O error (the connection was lost mid-transaction)")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(drop):
        yield dropped


def carried_out(exchange) -> int:
    return exchange.counters()["carried_out"].get("Set-Mailbox", 0)


def test_database_connection_dropped_mid_wave_batch_the_wave_completes_flipping_each_mailbox_once(stack, make_user):
    _, exchange = stack
    people = cast(make_user)
    movable = Mailbox.objects.filter(authority=Authority.ON_PREM, in_exo=True, in_ad=True)
    mailboxes = list(movable.filter(recipient_type_details="UserMailbox").order_by("upn")[:4])
    wave = new_wave(people["op"], *mailboxes, batch_size=4, max_rate=50.0)
    wave_submit(actor=people["op"], wave_id=wave.pk)
    wave_approve(actor=people["approver"], wave_id=wave.pk, acknowledge_warnings=True)
    wave_start(actor=people["op2"], wave_id=wave.pk)
    before = carried_out(exchange)

    failures: list[str] = []
    # The batch's statements on the member table: its claim, then for each member a stamp and a record. The third
    # record-or-claim statement is the second member's record, sent after its Set-Mailbox was carried out.
    with connection_dropped_at('UPDATE "soa_wavemember" SET "state"', occurrence=3) as dropped:
        VirtualClock(failures=failures).run(lambda: PilotWave.objects.get(pk=wave.pk).state != WaveState.RUNNING)
    assert dropped, "the connection was never dropped: the statement the test waits for was not sent"
    assert failures  # the batch met the drop

    wave.refresh_from_db()
    members = list(WaveMember.objects.filter(wave=wave))
    assert wave.state == WaveState.COMPLETED, [(m.state, m.attempts, m.last_error) for m in members]
    assert all(m.state == MemberState.DONE for m in members)
    assert carried_out(exchange) - before == len(mailboxes)  # the flip whose record was lost was not sent again
    for member in members:
        assert AuditEvent.objects.filter(action="soa.wave.member_done", object_id=str(member.pk)).count() == 1
    for mailbox in mailboxes:
        assert exchange.get_mailbox(str(mailbox.exo_object_id))["IsExchangeCloudManaged"] is True
    assert verify_chain()[1] is None


def ask_for_writebacks(make_user, mailboxes) -> dict[int, str]:
    """Help-desk edits adding an alias to each mailbox (cloud-managed): each applied in Exchange, then written back."""
    helpdesk = make_user("hugo", Role.HELPDESK)
    aliases = {m.pk: f"dbdrop-{uuid.uuid4().hex[:6]}@{m.primary_smtp.partition('@')[2]}" for m in mailboxes}
    for mailbox in mailboxes:
        change_request_create(
            actor=helpdesk, mailbox_id=mailbox.pk, reason="ticket db", base_version=mailbox.version,
            operations=[{"op": "add_alias", "address": aliases[mailbox.pk]}], idempotency_key=f"db-{mailbox.pk}",
        )  # fmt: skip
    return aliases


def writebacks_ended() -> bool:
    ended = [WritebackTask.State.DONE, WritebackTask.State.FAILED]
    return WritebackTask.objects.exists() and not WritebackTask.objects.exclude(state__in=ended).exists()


def assert_each_written_once(directory, mailboxes, aliases) -> None:
    tasks = list(WritebackTask.objects.all())
    assert len(tasks) == len(mailboxes)
    assert all(t.state == WritebackTask.State.DONE for t in tasks), [(t.state, t.attempts, t.error) for t in tasks]
    assert all(r.state == ChangeState.APPLIED for r in ChangeRequest.objects.all())
    for mailbox in mailboxes:
        proxies = [a.lower() for a in read_ad(directory, mailbox, "proxyAddresses")["proxyAddresses"]]
        assert proxies.count(f"smtp:{aliases[mailbox.pk]}".lower()) == 1
    for task in tasks:
        assert AuditEvent.objects.filter(action="writeback.task.completed", object_id=str(task.pk)).count() == 1
    assert verify_chain()[1] is None


def cloud_mailboxes(count: int) -> list[Mailbox]:
    found = Mailbox.objects.filter(authority=Authority.CLOUD, in_exo=True, in_ad=True, has_drift=False)
    return list(found.exclude(ad_guid=None).exclude(pk__in=WritebackTask.objects.values("mailbox_id"))[:count])


def test_database_connection_dropped_as_a_writeback_batch_records_its_end_the_sweep_returns_it_written_once(
    stack, make_user
):
    directory, _ = stack
    mailboxes = cloud_mailboxes(3)
    failures: list[str] = []
    # The statement that records a batch's tasks DONE, after AD was written: the job fails, the tasks stay RUNNING
    # with AD already holding their values, and the periodic sweep (every WAVE_SWEEP_INTERVAL) returns them.
    # (One UPDATE a row on SQLite; on PostgreSQL one UPDATE ... FROM jsonb_to_recordset(...) AS v(c0, c1, ...) for the
    # batch, or FROM (VALUES ...) when a value cannot travel as JSON: writeback.rows.)
    finish = (
        r'UPDATE "writeback_writebacktask" SET "state" = (%s|v\.c1|v\."v_state"), '
        r'"error" = (%s|v\.c2|v\."v_error"), "fin'
    )
    with connection_dropped_at(finish, occurrence=1) as dropped:
        aliases = ask_for_writebacks(make_user, mailboxes)
        clock = VirtualClock(failures=failures, sweep_every=settings.WAVE_SWEEP_INTERVAL)
        clock.run(writebacks_ended)
    assert dropped, "the connection was never dropped: the statement the test waits for was not sent"
    assert failures  # the batch met the drop
    assert AuditEvent.objects.filter(action="writeback.task.released", reason__contains="no heartbeat").exists()
    assert_each_written_once(directory, mailboxes, aliases)


def test_database_connection_dropped_during_a_writeback_batchs_heartbeat_the_task_is_retried_not_failed(
    stack, make_user
):
    directory, _ = stack
    mailboxes = cloud_mailboxes(3)
    # The batch's statements on the task table: its claim, then the heartbeat it sends between AD reads and writes.
    with connection_dropped_at('UPDATE "writeback_writebacktask" SET', occurrence=2) as dropped:
        aliases = ask_for_writebacks(make_user, mailboxes)
        VirtualClock(failures=[], sweep_every=settings.WAVE_SWEEP_INTERVAL).run(writebacks_ended)
    assert dropped, "the connection was never dropped: the statement the test waits for was not sent"
    assert_each_written_once(directory, mailboxes, aliases)
