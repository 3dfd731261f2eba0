"""`manage.py rotate_token`: give a token-auth API a new token and print it (the old
one stops working)."""

from django.core.management.base import BaseCommand, CommandError

from iolinker.errors import ApiError
from triggers import services
from triggers.models import AuthMode


class Command(BaseCommand):
    help = "Give a token-auth API a new token and print it (the old one stops working)."

    def add_arguments(self, parser):
        parser.add_argument("module")
        parser.add_argument("method")
        parser.add_argument(
            "--yes",
            action="store_true",
            help="Really rotate (without it, only say what would happen)",
        )

    def handle(self, *args, module, method, yes, **options):
        try:
            api = services.api_get(module=module, method=method)
        except ApiError as exc:
            raise CommandError(exc.message) from None
        if api.auth_mode != AuthMode.TOKEN:
            raise CommandError(f"API {api} does not use token authentication")
        if not yes:
            self.stdout.write(
                f"Would give {api} a new token; its current token would stop working. "
                "Run again with --yes to do it."
            )
            return
        self.stdout.write(services.api_set_token(api=api))
