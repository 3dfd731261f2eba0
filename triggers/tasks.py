"""django-q2 task entry points of the triggers app: take ids, let the services re-fetch the rows."""

from triggers.callbacks import callback_deliver, callbacks_deliver_due
from triggers.services import idempotency_key_purge
from triggers.stats import trigger_stats_purge


def purge_idempotency_keys() -> int:
    """Scheduled every minute (migration triggers 0004); also forgets refusal
    counts older than 30 days."""
    trigger_stats_purge()
    return idempotency_key_purge()


def deliver_callback(uid: int) -> str:
    """One attempt of a run's completion callback (queued after the run is recorded)."""
    return callback_deliver(uid=uid)


def deliver_due_callbacks() -> dict[str, int]:
    """Scheduled every minute (migration triggers 0005): queues retries that are due."""
    return callbacks_deliver_due()
