"""The portal's worker runs writeback jobs in its own process and every other job in a forked work horse, and a
database connection one job broke does not fail the next (writeback.worker.Worker.execute_job)."""

import os

import django_rq
import pytest
from django.db import connection

from soa.jobs import QUEUE, WRITEBACK_QUEUE
from tests.exchange_fixtures import portal_points_at
from writeback.jobs import clients
from writeback.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queues():
    found = [django_rq.get_queue(QUEUE), django_rq.get_queue(WRITEBACK_QUEUE)]
    for queue in found:
        queue.empty()
    yield found
    for queue in found:
        queue.empty()


def _work(queues) -> None:
    Worker(queues, connection=queues[0].connection).work(burst=True)
    for queue in queues:
        failed = queue.failed_job_registry
        assert failed.count == 0, [queue.fetch_job(job_id).exc_info for job_id in failed.get_job_ids()]


def test_a_writeback_job_runs_in_the_worker_and_any_other_in_a_forked_horse(queues):
    default, writeback = queues
    in_horse = default.enqueue(os.getpid)
    in_worker = writeback.enqueue(os.getpid)
    _work(queues)
    assert in_worker.return_value() == os.getpid()
    assert in_horse.return_value() not in (None, os.getpid())


def count_users() -> int:
    from portal.models import User

    return User.objects.count()


def drop_own_connection() -> None:
    """What a database restart or a dropped network does to a job's connection, seen from the job."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_connection_broken_in_one_job_is_replaced_before_the_next(queues):
    _, writeback = queues
    broken = writeback.enqueue(drop_own_connection)
    after = writeback.enqueue(count_users)
    Worker([writeback], connection=writeback.connection).work(burst=True)
    assert broken.get_status() == "failed"
    assert after.get_status() == "finished" and after.return_value() == 0


def test_a_forked_process_keeps_the_exchange_token_but_opens_its_own_connections(exchange_online, directory):
    """A work horse forked from a worker that used the Exchange client must not write to the worker's pooled TLS
    connections (both processes hold the same sockets): the client it gets has its token, and an empty pool."""
    with portal_points_at(directory, exchange_online):
        client = clients.exchange_client()
        client.get_accepted_domains()
        adapter = client.session.get_adapter(exchange_online.base_url)
        assert adapter.poolmanager.pools, "the first call should leave a pooled connection"
        token = client.tokens
        clients._exchange_pid = -1  # as seen from a process forked after that call
        assert clients.exchange_client() is client and client.tokens is token
        assert not adapter.poolmanager.pools
        client.get_accepted_domains()  # on a connection of its own


def test_a_stop_asked_for_during_the_wave_watch_stops_the_worker(queues, monkeypatch):
    """rq turns SIGTERM into StopRequested raised wherever the worker's own loop is, the wave watch included: the
    watch lets it through instead of logging it as a failed watch and keeping the worker running (systemd's stop, a
    benchmark's) until it is killed."""
    from rq.exceptions import StopRequested

    from writeback import worker as worker_module

    def stop_requested(*args, **kwargs):
        raise StopRequested()

    monkeypatch.setattr(worker_module, "wave_watch", stop_requested)
    with pytest.raises(StopRequested):
        Worker(queues, connection=queues[0].connection)._watch_waves()
