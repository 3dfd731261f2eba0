"""`manage.py list_apis`: list APIs with their URL, verb, authentication, state and
workflow."""

from django.core.management.base import BaseCommand

from triggers.models import ApiDefinition


class Command(BaseCommand):
    help = "List APIs with their URL, verb, authentication, state and workflow."

    def handle(self, *args, **options):
        apis = list(ApiDefinition.objects.select_related("workflow"))
        if not apis:
            self.stdout.write("No APIs defined.")
            return
        rows = [("STATE", "VERB", "AUTH", "URL", "WORKFLOW")]
        for api in apis:
            state = "enabled" if api.enabled else "disabled"
            if api.enabled and not api.workflow.enabled:
                state = "disabled(workflow)"
            if not api.has_secret:
                state += ",no-secret"
            rows.append(
                (
                    state,
                    api.http_method,
                    api.auth_mode,
                    api.url or f"(invalid name {api.module!r}/{api.method!r})",
                    api.workflow.name,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
