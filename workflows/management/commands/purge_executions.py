"""`manage.py purge_executions`: delete finished runs (with their step records and
callback deliveries) that finished more than --days days ago (default
IOLINKER_RETAIN_EXECUTIONS_DAYS)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workflows.retention import execution_purge, executions_expired


class Command(BaseCommand):
    help = (
        "Delete finished runs (with their step records and callback deliveries) that "
        "finished more than --days days ago (default IOLINKER_RETAIN_EXECUTIONS_DAYS). "
        "Dry run unless --yes. The scheduled purge does this every 15 minutes."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"Retention in days (default {settings.IOLINKER_RETAIN_EXECUTIONS_DAYS})",
        )
        parser.add_argument(
            "--yes", action="store_true", help="Really delete (without it, only count)"
        )

    def handle(self, *args, days, yes, **options):
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1")
        days = settings.IOLINKER_RETAIN_EXECUTIONS_DAYS if days is None else days
        if days <= 0:
            self.stdout.write("IOLINKER_RETAIN_EXECUTIONS_DAYS is 0: runs are kept forever.")
            return
        if not yes:
            expired = executions_expired(days=days)
            steps = expired.values("step_runs").exclude(step_runs=None).count()
            self.stdout.write(
                f"Would delete {expired.count()} execution(s) finished more than {days} day(s) "
                f"ago, with {steps} step record(s). Run again with --yes to do it."
            )
            return
        deleted = execution_purge(days=days, time_budget=float("inf"))
        self.stdout.write(f"Deleted {deleted} execution(s) finished more than {days} day(s) ago.")
