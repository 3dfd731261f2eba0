"""`manage.py cancel_execution`: cancel a run by uid: a queued or waiting run ends
cancelled now; a running one stops at its next step boundary (a running code step is
killed)."""

from django.core.management.base import BaseCommand, CommandError

from workflows.errors import WorkflowsError
from workflows.lifecycle import execution_cancel


class Command(BaseCommand):
    help = (
        "Cancel a run by uid: a queued or waiting run ends cancelled now; a running one "
        "stops at its next step boundary (a running code step is killed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("uid")

    def handle(self, *args, uid, **options):
        if not uid.isascii() or not uid.isdigit():
            raise CommandError(f"{uid!r} is not an execution uid")
        try:
            execution = execution_cancel(uid=int(uid))
        except WorkflowsError as exc:  # already ended, or the queue unavailable
            raise CommandError(str(exc)) from None
        if execution is None:
            raise CommandError(f"No execution {uid}")
        if execution.status == "cancelled":
            self.stdout.write(f"{uid}: cancelled")
        else:
            self.stdout.write(f"{uid}: cancel requested (it is {execution.status})")
