"""manage.py inventory_schedule: make sure scheduled inventory imports run (idempotent)."""

from django.core.management.base import BaseCommand

from writeback.inventory_schedule import inventory_schedule, tick_due_at


class Command(BaseCommand):
    help = (
        "Schedule the inventory imports unless they already are: a full import every INVENTORY_FULL_INTERVAL_DAYS "
        "and an incremental one every INVENTORY_INCREMENTAL_INTERVAL_MINUTES. Run it before starting the workers; "
        "they need --with-scheduler."
    )

    def handle(self, *args, **options):
        job, created = inventory_schedule()
        if job is None:
            self.stdout.write("Scheduled inventory imports are off (both intervals are 0); nothing was scheduled.")
            return
        due = tick_due_at(job)
        when = f"due {due:%Y-%m-%d %H:%M:%S} UTC" if due else str(job.get_status())
        if created:
            self.stdout.write(self.style.SUCCESS(f"Scheduled the inventory imports: job {job.id}, {when}."))
        else:
            self.stdout.write(f"The inventory imports are already scheduled: job {job.id}, {when}.")
