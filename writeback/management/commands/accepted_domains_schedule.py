"""manage.py accepted_domains_schedule: make sure the accepted domains are read again periodically (idempotent)."""

from django.core.management.base import BaseCommand

from writeback.jobs.accepted_domains import accepted_domains_schedule


class Command(BaseCommand):
    help = (
        "Schedule the refresh of the tenant's accepted domains (Get-AcceptedDomain) every half "
        "ACCEPTED_DOMAINS_TTL_SECONDS unless it already is. Run it before starting the workers; they need "
        "--with-scheduler."
    )

    def handle(self, *args, **options):
        job, created = accepted_domains_schedule()
        if job is None:
            self.stdout.write("ACCEPTED_DOMAINS_TTL_SECONDS is 0; nothing was scheduled.")
        elif created:
            self.stdout.write(self.style.SUCCESS(f"Scheduled the accepted domains refresh: job {job.id}."))
        else:
            self.stdout.write(f"The accepted domains refresh is already scheduled: job {job.id}.")
