"""manage.py readiness_snapshot_schedule: make sure the periodic readiness snapshot is scheduled (idempotent)."""

from django.core.management.base import BaseCommand

from writeback.jobs.readiness import CHAIN, readiness_snapshot_schedule, readiness_snapshot_take


class Command(BaseCommand):
    help = (
        "Schedule the readiness snapshot (the decommission readiness page's trend) every "
        "READINESS_SNAPSHOT_INTERVAL_MINUTES unless it already is; --now takes today's snapshot at once instead. "
        "Workers need --with-scheduler."
    )

    def add_arguments(self, parser):
        parser.add_argument("--now", action="store_true", help="take today's snapshot now, without the scheduler")

    def handle(self, *args, **options):
        if options["now"]:
            snapshot = readiness_snapshot_take()
            self.stdout.write(self.style.SUCCESS(f"Took the readiness snapshot of {snapshot.day}."))
            return
        job, created = readiness_snapshot_schedule()
        if job is None:
            self.stdout.write("READINESS_SNAPSHOT_INTERVAL_MINUTES is 0; nothing was scheduled.")
            return
        due = CHAIN.due_at(job)
        when = f"due {due:%Y-%m-%d %H:%M:%S} UTC" if due else str(job.get_status())
        if created:
            self.stdout.write(self.style.SUCCESS(f"Scheduled the readiness snapshot: job {job.id}, {when}."))
        else:
            self.stdout.write(f"The readiness snapshot is already scheduled: job {job.id}, {when}.")
