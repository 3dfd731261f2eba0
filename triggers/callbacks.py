"""Completion callbacks: when a run of an API with a callback URL finishes, POST
its status body there, signed in the Standard Webhooks style.

Life of a callback (one `CallbackDelivery` row per run, keyed by its uid):

1. ``callbacks_schedule`` runs inside the transaction that records the runs'
   final states (``workflows.services.running.chunk_save``, ``execution_recover_stale``, through
   ``workflows.hooks``: registered in ``triggers.apps``) and
   writes a pending delivery for each run whose API has a callback URL: the
   final state and the promise of a callback commit together. After the commit
   it queues one django-q2 task per delivery, so the run worker never waits
   for a callback target and one slow target never holds up another's callbacks.
2. ``callback_deliver`` (the task) claims the delivery with a conditional UPDATE
   (a duplicate message finds it claimed and does nothing), POSTs once with a
   short timeout, records the attempt and either marks it delivered (any 2xx),
   schedules the next attempt (a due time on the row: no worker waits), or gives
   up after IOLINKER_CALLBACK_MAX_ATTEMPTS.
3. ``callbacks_deliver_due`` (scheduled every minute) queues the deliveries that
   are due: retries, and first attempts whose message was lost (a process died
   between the commit and the push). django-q2's scheduler looks at schedules
   about every 30 s (``Sentinel.guard``: ``counter >= 30`` in steps of
   ``guard_cycle``), so a retry goes out up to ~90 s after it is due; the first
   attempt goes out at once.

The signing secret is stored as is: it must compute the HMAC on every attempt, so
a hash would be useless, and encrypting it with a key from the same settings
(SECRET_KEY) protects only against a leak of the database alone, at the price of
secrets that die with a SECRET_KEY rotation. A leaked secret lets someone forge
callbacks to that API's own receiver only; rotating it is one admin action. It is
shown once, when generated, like API tokens.
"""

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from triggers.models import ApiDefinition, CallbackAttempt, CallbackDelivery, CallbackStatus
from workflows.models import Execution
from workflows.outbound import OutboundRefused, outbound_client
from workflows.process import PerProcess
from workflows.selectors import execution_status

logger = logging.getLogger(__name__)

DELIVER_TASK = "triggers.tasks.deliver_callback"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a format marker, not a secret
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 bytes
EVENT_TYPE = "execution.finished"
# Retry delays grow 4x per attempt from IOLINKER_CALLBACK_RETRY_BASE (30 s: 30 s,
# 2 min, 8 min, 32 min, 2 h 8 min, 8 h 32 min, then every 12 h): about a day over
# the default 8 attempts, long enough to outlast a receiver's bad deploy.
BACKOFF_FACTOR = 4
MAX_DELAY_S = 12 * 3600
# An attempt's claim lapses this long after its timeout (its worker died mid-way).
CLAIM_MARGIN_S = 60
# A first attempt is due a little before the run finished by the clock of the worker
# that ran it: the clock of the worker that delivers it may be a little behind.
CLOCK_SKEW_S = 5
# What is kept of a failing receiver's answer in the attempt's error.
ERROR_BODY_CHARS = 300
MAX_RESPONSE_BYTES = 64 * 1024


# --- Secrets ---------------------------------------------------------------------


def callback_secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def api_rotate_callback_secret(*, api: ApiDefinition) -> str:
    """Give the API a new callback signing secret; return it (shown once).

    Attempts made from now on, retries of earlier runs included, are signed with
    the new secret."""
    api.callback_secret = callback_secret_new()
    api.save(update_fields=["callback_secret", "updated_at"])
    return api.callback_secret


def callback_sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">
    keyed with the secret's base64-decoded bytes (https://www.standardwebhooks.com/)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def callback_body(*, execution: Execution, api: ApiDefinition) -> bytes:
    """The payload: the run's status body (as the status endpoint answers it) with
    the event type and the API. Compact ASCII JSON: the bytes signed are the bytes
    sent, and a receiver decoding them any way gets them back."""
    payload = {
        "type": EVENT_TYPE,
        "api": {"module": api.module, "method": api.method},
        **execution_status(execution),
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


# --- Scheduling (in the run's transaction) -------------------------------------------


class _CallbackApis:
    """Ids of the APIs that have a callback URL, this process only, kept
    IOLINKER_API_CACHE_SECONDS (one query per period whatever the run rate) and
    cleared at once by saves in this process (api_cache_clear): runs of other
    APIs cost no query at all."""

    ids: frozenset[int] = frozenset()
    expires = 0.0

    @classmethod
    def get(cls) -> frozenset[int]:
        now = time.monotonic()
        if cls.expires <= now:
            cls.ids = frozenset(
                ApiDefinition.objects.exclude(callback_url="").values_list("pk", flat=True)
            )
            cls.expires = now + settings.IOLINKER_API_CACHE_SECONDS
        return cls.ids

    @classmethod
    def clear(cls) -> None:
        cls.expires = 0.0


def callback_apis_forget() -> None:
    _CallbackApis.clear()


def callbacks_schedule(executions: Iterable[Execution]) -> None:
    """Promise a callback for each of these finished runs whose API has a callback
    URL. Call inside the transaction that records their final states: the
    delivery rows commit with them, and their messages are queued after the
    commit (a lost message is queued again by the sweeper)."""
    executions = [e for e in executions if e.api_id is not None]
    if not executions:
        return
    with_callback = _CallbackApis.get()
    uids = [e.uid for e in executions if e.api_id in with_callback]
    if not uids:
        return
    now = timezone.now()
    due = now - timedelta(seconds=CLOCK_SKEW_S)
    CallbackDelivery.objects.bulk_create(
        [
            CallbackDelivery(execution_id=uid, next_attempt_at=due, queued_at=now, created_at=now)
            for uid in uids
        ],
        # A run is final once; a second writer (the stale-run sweeper racing a
        # slow worker) must not fail the transaction that records it.
        ignore_conflicts=True,
    )
    transaction.on_commit(lambda: _enqueue(uids))


def _broker_make():
    from django_q.brokers import get_broker

    return get_broker()


# One django-q2 broker per process (a Redis broker opens a connection each).
_BROKER = PerProcess(_broker_make)


def _broker():
    return _BROKER.get()


def _enqueue(uids: list[int]) -> None:
    """One message per delivery: a slow target holds up its own callback only."""
    from django_q.tasks import async_task

    try:
        for uid in uids:
            async_task(
                DELIVER_TASK,
                uid,
                task_name=f"callback {uid}",
                broker=_broker(),
                # Its own deadline ends an attempt first; this only bounds a stuck one.
                timeout=settings.IOLINKER_CALLBACK_TIMEOUT + 30,
            )
    except Exception as exc:  # noqa: BLE001 - the runs are recorded; the sweeper re-queues
        logger.error("Could not queue callbacks of %s run(s): %s", len(uids), exc)


# --- Delivery (the task) -------------------------------------------------------------


def callback_retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    base = settings.IOLINKER_CALLBACK_RETRY_BASE
    return min(base * BACKOFF_FACTOR ** (attempt - 1), MAX_DELAY_S)


def callback_deliver(*, uid: int) -> str:
    """Make one attempt of a run's callback, if one is due; record it. Returns
    what happened: "delivered", "retry", "failed" or "skipped" (not due, already
    delivered, or claimed by another worker)."""
    now = timezone.now()
    max_attempts = settings.IOLINKER_CALLBACK_MAX_ATTEMPTS
    claim_until = now + timedelta(seconds=settings.IOLINKER_CALLBACK_TIMEOUT + CLAIM_MARGIN_S)
    claimed = CallbackDelivery.objects.filter(
        pk=uid,
        status=CallbackStatus.PENDING,
        next_attempt_at__lte=now,
        attempts__lt=max_attempts,
    ).update(next_attempt_at=claim_until, queued_at=None, attempts=F("attempts") + 1)
    if not claimed:
        return "skipped"
    delivery = CallbackDelivery.objects.select_related("execution__api").get(pk=uid)
    api = delivery.execution.api
    started, t0 = timezone.now(), time.monotonic()
    if api is None or not api.callback_url:
        url, code, error = "", None, "The run's API was deleted or has no callback URL any more"
        give_up = True
    elif not api.callback_secret:
        url, code, error = api.callback_url, None, "The API has no callback secret: rotate it"
        give_up = True
    else:
        url = api.callback_url
        body = callback_body(execution=delivery.execution, api=api)
        code, error = _post(url, body, msg_id=delivery.webhook_id, secret=api.callback_secret)
        give_up = delivery.attempts >= max_attempts
    duration_ms = int((time.monotonic() - t0) * 1000)
    return _record(delivery, url, started, duration_ms, code, error, give_up=give_up)


def _post(url: str, body: bytes, *, msg_id: str, secret: str) -> tuple[int | None, str]:
    """POST once; (status code, error: empty when delivered). Redirects are not
    followed (a receiver moved is a configuration to fix, not a hop to trust)."""
    timeout = settings.IOLINKER_CALLBACK_TIMEOUT
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "iolinker-callbacks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": callback_sign(
            secret=secret, msg_id=msg_id, timestamp=timestamp, body=body
        ),
    }
    deadline = time.monotonic() + timeout
    try:
        with (
            outbound_client(timeout=timeout, follow_redirects=False) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            answer = _read_limited(response, deadline)
    except OutboundRefused as exc:
        return None, f"Refused: {exc}"[:1000]
    except httpx.TimeoutException:
        return None, f"Timed out after {timeout} s"
    except (httpx.HTTPError, _TooSlow) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:1000]
    if response.is_success:
        return response.status_code, ""
    text = answer.decode("utf-8", errors="replace")[:ERROR_BODY_CHARS]
    code = response.status_code
    if response.is_redirect:
        where = response.headers.get("location", "")[:200]
        return code, f"Answered {code} (a redirect to {where}: not followed)"
    return code, f"Answered {code}: {text}" if text else f"Answered {code}"


class _TooSlow(Exception):
    pass


def _read_limited(response: httpx.Response, deadline: float) -> bytes:
    """Up to MAX_RESPONSE_BYTES of the answer, within the attempt's wall-clock
    deadline (httpx's timeout applies per read: a trickling server could last forever)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise _TooSlow("the answer took longer than the timeout to arrive")
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_RESPONSE_BYTES:
            break
    return b"".join(chunks)


def _record(delivery, url, started, duration_ms, code, error, *, give_up: bool) -> str:
    now = timezone.now()
    if not error:
        outcome, fields = "delivered", {"status": CallbackStatus.DELIVERED}
    elif give_up:
        outcome, fields = "failed", {"status": CallbackStatus.FAILED}
    else:
        outcome = "retry"
        due = now + timedelta(seconds=callback_retry_delay(delivery.attempts))
        fields = {"next_attempt_at": due}
    if outcome != "retry":
        fields.update(next_attempt_at=None, finished_at=now)
    with transaction.atomic():
        CallbackAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            url=url,
            started_at=started,
            duration_ms=duration_ms,
            status_code=code,
            error=error,
            next_attempt_at=fields["next_attempt_at"],
        )
        CallbackDelivery.objects.filter(pk=delivery.pk).update(**fields)
    if outcome != "delivered":
        logger.warning(
            "Callback of run %s, attempt %s to %s: %s (%s)",
            delivery.pk,
            delivery.attempts,
            url,
            error,
            outcome,
        )
    return outcome


# --- The sweeper ------------------------------------------------------------------


def callbacks_deliver_due() -> dict[str, int]:
    """Queue the callbacks that are due and not queued recently: retries, first
    attempts whose message was lost, attempts whose worker died. Gives up those
    out of attempts whose last worker died. Scheduled every minute."""
    now = timezone.now()
    pending = CallbackDelivery.objects.filter(
        status=CallbackStatus.PENDING, next_attempt_at__lte=now
    )
    gave_up = pending.filter(attempts__gte=settings.IOLINKER_CALLBACK_MAX_ATTEMPTS).update(
        status=CallbackStatus.FAILED, next_attempt_at=None, finished_at=now
    )
    # A message sent within IOLINKER_REQUEUE_AFTER is still on its way (a backlog):
    # do not pile up duplicates behind it.
    not_queued = Q(queued_at__isnull=True) | Q(
        queued_at__lt=now - timedelta(seconds=settings.IOLINKER_REQUEUE_AFTER)
    )
    uids = list(pending.filter(not_queued).values_list("pk", flat=True)[:5000])
    if uids:
        # Duplicates (two sweepers) are harmless: an attempt starts with a claim.
        CallbackDelivery.objects.filter(pk__in=uids).update(queued_at=now)
        _enqueue(uids)
    return {"queued": len(uids), "gave_up": gave_up}
