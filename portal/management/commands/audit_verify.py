"""manage.py audit_verify: recompute the audit chain, check it against the published heads, publish the new head."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from portal.audit_chain import verify_chain
from portal.audit_head import HeadError, publish_head, read_heads


class Command(BaseCommand):
    help = (
        "Recompute the audit log's chain and check it against every head published in AUDIT_HEAD_FILE (or --heads); "
        "exit 1 naming the first broken event when it does not hold, else publish the current head."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--heads", type=Path, help="Read the published heads from this file (e.g. a syslog archive) instead."
        )
        parser.add_argument("--no-publish", action="store_true", help="Do not publish the head after a clean run.")

    def handle(self, *args, **options):
        try:
            heads = read_heads(options["heads"])
        except HeadError as exc:
            raise CommandError(str(exc)) from exc
        report = verify_chain(heads=heads)
        if report.broken is not None:
            self.stderr.write(
                self.style.ERROR(f"Audit chain broken at event #{report.broken.event_id}: {report.broken.reason}. ")
                + f"{report.checked} events before it verified."
            )
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {report.summary()}"))
        if options["no_publish"]:
            return
        try:
            head, places = publish_head(report)
        except HeadError as exc:
            raise CommandError(str(exc)) from exc
        if places:
            self.stdout.write(f"Published head #{head.head_id} ({head.count} events) to {', '.join(places)}.")
        else:
            self.stdout.write(self.style.WARNING("No head published: AUDIT_HEAD_FILE and AUDIT_HEAD_SYSLOG are unset."))
