"""manage.py audit_head_schedule: make sure the audit chain's head is published periodically (idempotent)."""

from django.core.management.base import BaseCommand

from writeback.jobs.audit import CHAIN, audit_head_schedule


class Command(BaseCommand):
    help = (
        "Schedule the publication of the audit chain's head (AUDIT_HEAD_FILE, AUDIT_HEAD_SYSLOG) every "
        "AUDIT_HEAD_INTERVAL_MINUTES unless it already is. Run it before starting the workers; they need "
        "--with-scheduler."
    )

    def handle(self, *args, **options):
        job, created = audit_head_schedule()
        if job is None:
            self.stdout.write("AUDIT_HEAD_INTERVAL_MINUTES is 0; nothing was scheduled (audit_verify still publishes).")
            return
        due = CHAIN.due_at(job)
        when = f"due {due:%Y-%m-%d %H:%M:%S} UTC" if due else str(job.get_status())
        if created:
            self.stdout.write(self.style.SUCCESS(f"Scheduled the audit head publication: job {job.id}, {when}."))
        else:
            self.stdout.write(f"The audit head publication is already scheduled: job {job.id}, {when}.")
