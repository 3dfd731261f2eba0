"""Idempotency keys, and the transaction shape they need: a call carrying a key
writes its key row and its run in one transaction (workflows offers the pieces:
a uid, a checked run, ``sql.executions_insert`` and ``queueing.write_then_push``),
so a retry within IOLINKER_IDEMPOTENCY_SECONDS gets the first call's uid and
starts nothing; expired keys are purged every minute.
"""

import hashlib
import json
import re
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from iolinker import errors
from iolinker.errors import ApiError
from triggers.models import ApiDefinition, IdempotencyKey
from workflows.models import Execution
from workflows.services import queueing, sql
from workflows.services.intake import execution_uid_new, run_new

# A caller that may retry (a timeout, a lost answer) sends the same
# Idempotency-Key with the same request; within IOLINKER_IDEMPOTENCY_SECONDS
# the retry gets the first call's uid and starts nothing. Keys are explicit
# only: two identical bodies without a key are two runs, as callers expect.

IDEMPOTENCY_HEADER = "idempotency-key"
# Printable ASCII (space included), as the header arrives (servers strip the
# spaces around a header value). Non-ASCII bytes reach WSGI as latin-1 text
# above \x7e, so they are refused too.
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# A key row that vanishes between our INSERT … ON CONFLICT DO NOTHING and our
# read (purged or released by another process at that moment) is inserted again.
_RESERVE_ATTEMPTS = 3
# The purge deletes this many keys per statement (short transactions), and stops
# after this long (the next scheduled purge goes on).
PURGE_BATCH = 2000
PURGE_TIME_BUDGET_S = 20.0


def idempotency_key_check(key: str) -> None:
    """A key is 1 to 255 printable ASCII characters; anything else is 400
    (requestError.invalidParams), like any other malformed parameter."""
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(errors.IDEMPOTENCY_KEY_INVALID)


def request_fingerprint(*, http_method: str, body: dict, query: dict) -> str:
    """What the caller asked for: SHA-256 of the verb, body and query as canonical
    JSON (sorted keys, no spaces), so the same request serialised differently
    matches. Headers are left out on purpose: a retry may well carry another
    User-Agent, X-Request-Id or a rotated token, and is still the same request."""
    canonical = json.dumps([http_method, body, query], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def api_call_idempotent(*, api: ApiDefinition, key: str, trigger_input: dict) -> tuple[int, bool]:
    """Accept a call carrying an idempotency key: ``(uid, replayed)``.

    * the key is new for this API (or expired): a new run, recorded with the key
      in one transaction (queueing.write_then_push);
    * the key names a run of the same request within the window: that run's uid,
      nothing started (``replayed``);
    * the key names a different request: 422 requestError.idempotencyKeyReused,
      nothing stored.

    Two concurrent calls with one key: the second blocks on the key's unique
    index until the first commits, then reads its row (one run, one uid for both).
    Keys are per API: the same key on another API is another key.
    """
    fingerprint = request_fingerprint(
        http_method=trigger_input["method"],
        body=trigger_input["body"],
        query=trigger_input["query"],
    )

    # The run and its key commit together or not at all, and a concurrent duplicate
    # blocks on the key's unique index until this transaction ends, then sees its
    # outcome. Not group-committed (workflows/intake.py): a batch is one
    # transaction for many callers, and one caller's conflict or refusal must not
    # fail the others, nor may a key wait on another batch's lock while holding the
    # committer. So the request thread writes its own run: a transaction and two
    # or three more statements, paid only by calls that carry a key.
    uid = execution_uid_new()  # outside the transaction: its lease commits on its own
    queueing.process()  # before the transaction: it may give back a pooled connection
    run = run_new(uid, api.workflow_id, api.pk, trigger_input)
    earlier: list[int] = []

    def write() -> list[int]:
        replayed = idempotency_key_reserve(api=api, key=key, fingerprint=fingerprint, uid=uid)
        if replayed is not None:
            earlier.append(replayed)
            return []
        sql.executions_insert([run])
        return [uid]

    def undo(uids) -> None:
        # The run and its key together, so a retry with the key starts afresh
        # instead of replaying a uid that no longer exists; only the key row naming
        # this uid: never a key another request holds by now.
        with transaction.atomic():
            IdempotencyKey.objects.filter(api=api, key=key, uid=uid).delete()
            Execution.objects.filter(uid=uid).delete()

    # ORM broker: key, run and message in one transaction. Redis: key and run
    # commit, then the push; a process dying in between leaves a queued run the
    # reaper pushes again, and meanwhile the key replays its uid (that run will
    # happen).
    queueing.write_then_push(write=write, undo=undo, atomic_write=True)
    if earlier:
        return earlier[0], True
    return uid, False


def idempotency_key_reserve(
    *, api: ApiDefinition, key: str, fingerprint: str, uid: int
) -> int | None:
    """Within the transaction that writes run ``uid``: record the key for it and
    return None, or return the uid of the run the key already names.

    The row is inserted first (INSERT … ON CONFLICT DO NOTHING; INSERT OR IGNORE
    on SQLite) rather than looked up first: a lookup finds nothing for two
    concurrent requests alike, while the insert makes the second wait on the
    unique index for the first one's transaction. The row is then read locked:
    if it names our uid we wrote it; otherwise it is someone's earlier call. An
    expired row is taken over in place (new uid, fingerprint and window); the
    lock makes concurrent takers queue, and the next one sees the fresh row.
    """
    now = timezone.now()
    for _ in range(_RESERVE_ATTEMPTS):
        IdempotencyKey.objects.bulk_create(
            [IdempotencyKey(api=api, key=key, fingerprint=fingerprint, uid=uid, created_at=now)],
            ignore_conflicts=True,
        )
        row = IdempotencyKey.objects.select_for_update().filter(api=api, key=key).first()
        if row is not None:
            break
    else:
        raise ApiError(errors.UNAVAILABLE, "Could not record the Idempotency-Key, try again")
    if row.uid == uid:
        return None  # ours: uids are never issued twice
    if row.created_at < idempotency_key_cutoff(now):
        row.fingerprint, row.uid, row.created_at = fingerprint, uid, now
        row.save(update_fields=["fingerprint", "uid", "created_at"])
        return None
    if row.fingerprint != fingerprint:
        raise ApiError(errors.IDEMPOTENCY_KEY_REUSED)
    return row.uid


def idempotency_key_cutoff(now: datetime | None = None) -> datetime:
    """Keys created before this are expired: they replay nothing and are purged."""
    window = timedelta(seconds=settings.IOLINKER_IDEMPOTENCY_SECONDS)
    return (now or timezone.now()) - window


def idempotency_keys_expired() -> QuerySet[IdempotencyKey]:
    return IdempotencyKey.objects.filter(created_at__lt=idempotency_key_cutoff())


def idempotency_key_purge(
    *, batch_size: int = PURGE_BATCH, time_budget: float = PURGE_TIME_BUDGET_S
) -> int:
    """Delete expired keys, ``batch_size`` per statement (each a short
    transaction, served by the created_at index), until none are left or
    ``time_budget`` seconds have passed; returns how many were deleted.
    Scheduled every minute (migration triggers 0004)."""
    deadline = time.monotonic() + time_budget
    deleted = 0
    while True:
        expired = idempotency_keys_expired()
        pks = list(expired.values_list("pk", flat=True)[:batch_size])
        if not pks:
            break
        # created_at is checked again: a key taken over meanwhile has a new window.
        deleted += expired.filter(pk__in=pks).delete()[0]
        if len(pks) < batch_size or time.monotonic() > deadline:
            break
    return deleted
