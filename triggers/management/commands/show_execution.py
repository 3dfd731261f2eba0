"""`manage.py show_execution`: show an execution by uid, with its trigger input,
output, step runs and completion callback attempts (JSON)."""

import json

from django.core.management.base import BaseCommand, CommandError

from triggers.selectors import execution_callback
from workflows.selectors import execution_detail


class Command(BaseCommand):
    help = (
        "Show an execution by uid, with its trigger input, output, step runs and "
        "completion callback attempts (JSON)."
    )

    def add_arguments(self, parser):
        parser.add_argument("uid")

    def handle(self, *args, uid, **options):
        try:
            detail = execution_detail(uid=int(uid))
        except ValueError:
            raise CommandError(f"{uid!r} is not an execution uid") from None
        if detail is None:
            raise CommandError(f"No execution {uid}")
        detail["callback"] = execution_callback(uid=int(uid))
        self.stdout.write(json.dumps(detail, indent=2, ensure_ascii=False))
