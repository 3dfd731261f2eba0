"""`manage.py bootstrap`: prepare an install to run: migrate, collect static files,
create the admin login (printed) and load the demo API when missing."""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from triggers.demo import demo_load


class Command(BaseCommand):
    help = (
        "Prepare an install to run: migrate, collect static files, create the admin "
        "login (printed) and load the demo API when missing. Safe to run every start."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="Do not load the demo API")

    def handle(self, *args, no_demo, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self._admin_login()
        if not no_demo and demo_load():
            self.stdout.write("Loaded the demo API: POST /v1/api/demo/hello/async")

    def _admin_login(self) -> None:
        User = get_user_model()  # noqa: N806
        path = settings.VAR_DIR / "admin-password.txt"
        if not User.objects.filter(is_superuser=True).exists():
            password = os.environ.get("IOLINKER_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "", password)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            self.stdout.write(
                f"Admin login created: user 'admin', password '{password}' "
                f"(also in {path}, readable by you only: change it, then delete the file)"
            )
        elif path.exists():
            self.stdout.write(f"Admin login: user 'admin', password in {path}")
        else:
            self.stdout.write("Admin login: your existing superuser")
