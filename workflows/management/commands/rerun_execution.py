"""`manage.py rerun_execution`: run an execution's workflow again with the same input:
prints the new run's uid."""

from django.core.management.base import BaseCommand, CommandError

from workflows.errors import WorkflowsError
from workflows.lifecycle import execution_rerun


class Command(BaseCommand):
    help = "Run an execution's workflow again with the same input: prints the new run's uid."

    def add_arguments(self, parser):
        parser.add_argument("uid")

    def handle(self, *args, uid, **options):
        if not uid.isascii() or not uid.isdigit():
            raise CommandError(f"{uid!r} is not an execution uid")
        try:
            execution = execution_rerun(uid=int(uid))
        except WorkflowsError as exc:  # unreadable input, or the queue unavailable
            raise CommandError(str(exc)) from None
        if execution is None:
            raise CommandError(f"No execution {uid}")
        self.stdout.write(str(execution.uid))
