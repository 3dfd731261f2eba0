"""`manage.py write_openapi`: write the OpenAPI 3.1 document of the enabled APIs (what
GET /v1/openapi.json serves) to stdout or a file."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from triggers.openapi import openapi_document, openapi_render


class Command(BaseCommand):
    help = (
        "Write the OpenAPI 3.1 document of the enabled APIs (what GET /v1/openapi.json "
        "serves) to stdout or a file."
    )

    def add_arguments(self, parser):
        parser.add_argument("-o", "--output", metavar="FILE", help="Write here (default: stdout)")
        parser.add_argument(
            "--base-url",
            default=settings.IOLINKER_BASE_URL,
            help="The server URL in the document (default: IOLINKER_BASE_URL; empty: none)",
        )

    def handle(self, *args, output, base_url, **options):
        body = openapi_render(openapi_document(base_url=base_url or None))
        if output is None:
            self.stdout.write(body.decode(), ending="")
            return
        try:
            Path(output).write_bytes(body)
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc}") from None
        self.stderr.write(f"Wrote {output}")
