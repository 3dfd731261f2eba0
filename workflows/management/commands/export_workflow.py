"""`manage.py export_workflow`: write a workflow as JSON (format iolinker.workflow, see
README) to stdout or a file."""

import json

from django.core.management.base import BaseCommand, CommandError

from workflows.definition import workflow_export
from workflows.models import Workflow


class Command(BaseCommand):
    help = "Write a workflow as JSON (format iolinker.workflow, see README) to stdout or a file."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The workflow's name")
        parser.add_argument("-o", "--output", help="Write to this file instead of stdout")

    def handle(self, *args, name, output, **options):
        workflow = Workflow.objects.filter(name=name).first()
        if workflow is None:
            raise CommandError(f"No workflow named {name!r}")
        text = json.dumps(workflow_export(workflow=workflow), indent=2, ensure_ascii=False)
        if output:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        else:
            self.stdout.write(text)
