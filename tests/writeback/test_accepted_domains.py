"""The accepted domains refresh (writeback.jobs.accepted_domains): Get-AcceptedDomain into the cache table, a failure
recorded without losing the cached list, and its schedule on the self-renewing chain."""

import django_rq
import pytest
from django.db import transaction
from django.utils import timezone

from portal.models import AuditEvent
from soa.models import AcceptedDomain
from soa.services.accepted_domains import accepted_domains_replace
from tests.exchange_fixtures import exchange_config
from writeback.exchange import ExchangeOnlineClient
from writeback.jobs import accepted_domains

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_refresh_stores_what_exchange_lists(exo_clean):
    client = ExchangeOnlineClient(exchange_config(exo_clean))
    listed = {item["DomainName"].lower() for item in client.get_accepted_domains()}
    assert accepted_domains.refresh_now("refresh-test", exchange=client).startswith(f"{len(listed)} accepted")
    assert set(AcceptedDomain.objects.values_list("domain", flat=True)) == listed
    assert {exo_clean.mail_domain, f"{exo_clean.mail_domain.split('.')[0]}.onmicrosoft.com"} <= listed
    assert AcceptedDomain.objects.get(is_default=True).domain == exo_clean.mail_domain
    assert AuditEvent.objects.filter(action="soa.accepted_domains.changed").count() == 1


def test_a_failed_refresh_is_recorded_and_keeps_the_cached_list(exo_clean):
    with transaction.atomic():
        accepted_domains_replace(domains=[{"DomainName": "kept.example.com"}], fetched_at=timezone.now())
    exo_clean.set_faults(fail_next=1, fail_status=503)
    client = ExchangeOnlineClient(exchange_config(exo_clean, max_attempts=1))
    assert accepted_domains.refresh_now("refresh-failing", exchange=client) is None
    assert list(AcceptedDomain.objects.values_list("domain", flat=True)) == ["kept.example.com"]
    failed = AuditEvent.objects.get(action="writeback.job.failed", object_id="refresh-failing")
    assert "Get-AcceptedDomain" in failed.reason


def test_the_refresh_runs_every_half_ttl_and_not_at_all_without_one(settings):
    settings.ACCEPTED_DOMAINS_TTL_SECONDS = 3600
    assert accepted_domains.interval_seconds() == 1800
    settings.ACCEPTED_DOMAINS_TTL_SECONDS = 30
    assert accepted_domains.interval_seconds() == accepted_domains.MIN_INTERVAL
    settings.ACCEPTED_DOMAINS_TTL_SECONDS = 0
    assert accepted_domains.interval_seconds() is None
    assert accepted_domains.accepted_domains_schedule() == (None, False)


def test_scheduling_twice_keeps_one_chain(settings):
    queue = django_rq.get_queue(accepted_domains.QUEUE)
    queue.connection.delete(accepted_domains.NEXT_KEY)
    first, created = accepted_domains.accepted_domains_schedule()
    again, created_again = accepted_domains.accepted_domains_schedule()
    assert created and not created_again and again.id == first.id
    assert first.id in queue.scheduled_job_registry.get_job_ids()
    assert first.func_name == "writeback.jobs.accepted_domains.accepted_domains_periodic_job"
    queue.scheduled_job_registry.remove(first.id, delete_job=True)
    queue.connection.delete(accepted_domains.NEXT_KEY)
