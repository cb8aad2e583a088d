"""manage.py drift_scan_schedule: make sure the periodic drift scan is scheduled (idempotent)."""

from django.core.management.base import BaseCommand

from writeback.jobs.drift import CHAIN, drift_scan_schedule


class Command(BaseCommand):
    help = (
        "Schedule the drift scan (Exchange against AD for cloud-managed mailboxes) every DRIFT_SCAN_INTERVAL_MINUTES "
        "unless it already is. Run it before starting the workers; they need --with-scheduler."
    )

    def handle(self, *args, **options):
        job, created = drift_scan_schedule()
        if job is None:
            self.stdout.write("DRIFT_SCAN_INTERVAL_MINUTES is 0; nothing was scheduled.")
            return
        due = CHAIN.due_at(job)
        when = f"due {due:%Y-%m-%d %H:%M:%S} UTC" if due else str(job.get_status())
        if created:
            self.stdout.write(self.style.SUCCESS(f"Scheduled the drift scan: job {job.id}, {when}."))
        else:
            self.stdout.write(f"The drift scan is already scheduled: job {job.id}, {when}.")
