"""Reads for the triggers app's pages and commands: an API's curl example, a run's
callback attempts."""

import json
import shlex
from urllib.parse import urlencode

from triggers.models import ApiDefinition, AuthMode, CallbackDelivery


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


def api_curl_example(api: ApiDefinition) -> str:
    """A ready-to-paste curl call of the API with its debug payload, for its
    authentication mode (secrets as placeholders: they are stored hashed)."""
    payload = api.debug_payload or {}
    url = api.url
    command = ["curl", "-i"]
    if api.http_method == "GET":
        if payload:
            query = {k: v if isinstance(v, list) else str(v) for k, v in payload.items()}
            url += "?" + urlencode(query, doseq=True)
    else:
        command += ["-X", "POST", "-H", "content-type: application/json"]
    if api.auth_mode == AuthMode.TOKEN:
        command += ["-H", "token: <your token>"]
    elif api.auth_mode == AuthMode.PASSWORD:
        command += ["-H", f"user: {api.auth_user or '<user>'}", "-H", "password: <your password>"]
    if api.http_method == "POST":
        command += ["-d", json.dumps(payload, ensure_ascii=False)]
    command.append(url)
    return " ".join(shlex.quote(part) for part in command)
