from triggers.models import CallbackDelivery


def _iso(value):
    return value.isoformat() if value else None


def execution_callback(*, uid: int) -> dict | None:
    """A run's completion callback and its attempts (None: the run has none)."""
    delivery = CallbackDelivery.objects.prefetch_related("attempt_log").filter(pk=uid).first()
    if delivery is None:
        return None
    return {
        "webhookId": delivery.webhook_id,
        "status": delivery.status,
        "attempts": [
            {
                "number": attempt.number,
                "url": attempt.url,
                "startedAt": _iso(attempt.started_at),
                "durationMs": attempt.duration_ms,
                "statusCode": attempt.status_code,
                "error": attempt.error,
                "nextAttemptAt": _iso(attempt.next_attempt_at),
            }
            for attempt in delivery.attempt_log.all()
        ],
        "nextAttemptAt": _iso(delivery.next_attempt_at),
        "finishedAt": _iso(delivery.finished_at),
    }
