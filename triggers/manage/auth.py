"""Who may call the management API: staff users, by token or by session.

Tokens are django-rest-knox's: ``Authorization: Token <token>``, stored as a
SHA-512 digest only (like API tokens, never readable again), compared in
constant time, with an optional expiry. They are made by the ``manage_token``
command (README, "Management API"), which calls ``manage_token_create``.
Sessions are the admin's login cookie; DRF's SessionAuthentication enforces
CSRF on them (unsafe methods need the ``X-CSRFToken`` header).
"""

from datetime import timedelta

from knox.auth import TokenAuthentication
from knox.models import AuthToken
from rest_framework import exceptions


class StaffTokenAuthentication(TokenAuthentication):
    """knox's token authentication; a token that is not UTF-8 is a wrong token
    (401), not an unhandled error."""

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


def manage_token_create(*, user, days: int | None) -> str:
    """A new management token for ``user``, valid ``days`` days (None: until
    revoked); returns it, the only time it is readable."""
    expiry = timedelta(days=days) if days else None
    _, token = AuthToken.objects.create(user=user, expiry=expiry)
    return token


def manage_tokens_revoke(*, user) -> int:
    """Delete every management token of ``user``; how many."""
    return AuthToken.objects.filter(user=user).delete()[0]
