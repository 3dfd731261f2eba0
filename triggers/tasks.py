"""django-q2 task entry points of the triggers app."""

from triggers.services import idempotency_key_purge


def purge_idempotency_keys() -> int:
    """Scheduled every minute (migration triggers 0004)."""
    return idempotency_key_purge()
