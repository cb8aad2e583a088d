"""manage.py audit_verify: recompute the audit hash chain and report the first broken link."""

from django.core.management.base import BaseCommand

from portal.audit import verify_chain


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain; exit 1 and name the first broken event when it does not hold."

    def handle(self, *args, **options):
        checked, broken = verify_chain()
        if broken is None:
            self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {checked} events verified."))
            return
        self.stderr.write(
            self.style.ERROR(f"Audit chain broken at event #{broken.event_id}: {broken.reason}. ")
            + f"{checked} events before it verified."
        )
        raise SystemExit(1)
