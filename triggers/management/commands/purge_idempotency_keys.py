"""`manage.py purge_idempotency_keys`: delete Idempotency-Keys older than
IOLINKER_IDEMPOTENCY_SECONDS (the scheduled purge does this every minute; this is
for a cluster without workers, or at once)."""

from django.core.management.base import BaseCommand

from triggers import services


class Command(BaseCommand):
    help = (
        "Delete Idempotency-Keys older than IOLINKER_IDEMPOTENCY_SECONDS (the scheduled "
        "purge does this every minute; this is for a cluster without workers, or at once)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--yes",
            action="store_true",
            help="Really delete (without it, only count the expired keys)",
        )

    def handle(self, *args, yes, **options):
        if not yes:
            count = services.idempotency_keys_expired().count()
            self.stdout.write(
                f"Would delete {count} expired idempotency key(s). Run again with --yes to do it."
            )
            return
        deleted = services.idempotency_key_purge(time_budget=float("inf"))
        self.stdout.write(f"Deleted {deleted} expired idempotency key(s).")
