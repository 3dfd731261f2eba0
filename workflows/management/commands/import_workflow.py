"""`manage.py import_workflow`: create a workflow from a JSON file written by
export_workflow (or the admin's Export)."""

import json

from django.core.management.base import BaseCommand, CommandError

from workflows.definition import DefinitionError, workflow_import


class Command(BaseCommand):
    help = "Create a workflow from a JSON file written by export_workflow (or the admin's Export)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The JSON file ('-' for stdin)")
        parser.add_argument("--name", help="Import under this name instead of the file's")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Replace the workflow of that name (its steps become a new version)",
        )
        parser.add_argument(
            "--user",
            help="Import with this admin user's permissions (code steps need "
            "'Can add or change code steps'); without it, as the trusted operator",
        )

    def handle(self, *args, file, name, replace, user, **options):
        if user is not None:
            from django.contrib.auth import get_user_model

            found = get_user_model()._default_manager.filter(username=user).first()
            if found is None or not found.is_active:
                raise CommandError(f"No active user {user!r}")
            user = found
        try:
            if file == "-":
                import sys

                document = json.load(sys.stdin)
            else:
                with open(file, encoding="utf-8") as f:
                    document = json.load(f)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from None
        try:
            workflow = workflow_import(document=document, name=name, replace=replace, user=user)
        except DefinitionError as exc:
            raise CommandError(str(exc)) from None
        version = workflow.versions.order_by("-number").first()
        self.stdout.write(f"Imported {workflow.name!r} (version {version.number})")
