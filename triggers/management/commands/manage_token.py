"""`manage_token`: make or revoke a management API token (triggers/manage/auth.py)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from triggers.manage.auth import manage_token_create, manage_tokens_revoke


class Command(BaseCommand):
    help = (
        "Print a new token of the management API (/v1/manage/) for a staff user: send it "
        "as `Authorization: Token <token>`. Stored hashed: it is shown only now. The user's "
        "Django permissions apply to every call made with it."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", help="An active staff user")
        parser.add_argument(
            "--days",
            type=int,
            default=90,
            help="Valid this many days (default 90; 0: until revoked)",
        )
        parser.add_argument(
            "--revoke",
            action="store_true",
            help="Instead, delete every management token of the user",
        )

    def handle(self, *args, username, days, revoke, **options):
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}")
        if revoke:
            count = manage_tokens_revoke(user=user)
            self.stdout.write(f"Revoked {count} management token(s) of {username!r}.")
            return
        if not (user.is_active and user.is_staff):
            raise CommandError(f"{username!r} is not an active staff user")
        if days < 0:
            raise CommandError("--days must be 0 or more")
        self.stdout.write(manage_token_create(user=user, days=days or None))
