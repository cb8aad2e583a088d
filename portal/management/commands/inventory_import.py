"""manage.py inventory_import: run an import now, in this process, printing progress."""

from django.core.management.base import BaseCommand, CommandError

from writeback.inventory import InventoryError, inventory_run_request
from writeback.jobs.inventory import claim, execute
from writeback.models import InventoryRun


class Command(BaseCommand):
    help = "Import every directory-synced mailbox from Exchange Online and AD (full, or --incremental)."

    def add_arguments(self, parser):
        parser.add_argument("--incremental", action="store_true", help="only what changed since the last run")

    def handle(self, *args, incremental: bool, **options):
        mode = InventoryRun.Mode.INCREMENTAL if incremental else InventoryRun.Mode.FULL
        try:
            run = inventory_run_request(actor=None, mode=mode, enqueue=False)
        except InventoryError as exc:
            raise CommandError(str(exc)) from None
        run = execute(claim(run.pk))
        summary = ", ".join(f"{key}={value}" for key, value in run.audit_snapshot().items() if key != "error")
        if run.state == InventoryRun.State.FAILED:
            raise CommandError(f"Import #{run.pk} failed: {run.error}")
        self.stdout.write(self.style.SUCCESS(f"Import #{run.pk} done: {summary}"))
