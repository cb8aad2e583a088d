"""manage.py wave_sweep_schedule: make sure the periodic wave sweep is scheduled (idempotent)."""

from django.core.management.base import BaseCommand

from writeback.wave_schedule import sweep_due_at, wave_sweep_schedule


class Command(BaseCommand):
    help = (
        "Schedule the periodic wave sweep unless it already is (every WAVE_SWEEP_INTERVAL seconds). Run it before "
        "starting the workers; they need --with-scheduler."
    )

    def handle(self, *args, **options):
        job, created = wave_sweep_schedule()
        due = sweep_due_at(job)
        when = f"due {due:%Y-%m-%d %H:%M:%S} UTC" if due else str(job.get_status())
        if created:
            self.stdout.write(self.style.SUCCESS(f"Scheduled the wave sweep: job {job.id}, {when}."))
        else:
            self.stdout.write(f"The wave sweep is already scheduled: job {job.id}, {when}.")
