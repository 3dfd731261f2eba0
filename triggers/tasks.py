"""django-q2 task entry points: take ids, let the services re-fetch the rows."""

from triggers.callbacks import callback_deliver, callbacks_deliver_due


def deliver_callback(uid: int) -> str:
    """One attempt of a run's completion callback (queued after the run is recorded)."""
    return callback_deliver(uid=uid)


def deliver_due_callbacks() -> dict[str, int]:
    """Scheduled every minute (migration triggers 0004): queues retries that are due."""
    return callbacks_deliver_due()
