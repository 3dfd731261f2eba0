"""Retention: finished runs are deleted some days after they finished.

``IOLINKER_RETAIN_EXECUTIONS_DAYS`` (30; 0 keeps everything) applies to runs in
a final state only: a queued, running or waiting run is never deleted, however
old. A run goes with its step records and its callback delivery (CASCADE); runs
that name it as ``parent`` or ``rerun_of`` keep their own record with the link
emptied (SET_NULL). Idempotency keys have their own, shorter window
(``IOLINKER_IDEMPOTENCY_SECONDS``, triggers.services.idempotency_key_purge).

Deletion goes in batches of ``batch_size`` uids, each its own short transaction,
until nothing is left or the time budget is spent (the schedule comes back), so
no statement holds locks on the tables for long and triggers never wait on it.
"""

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from workflows.ids import uid_at
from workflows.models import FINAL_STATUSES, Execution

logger = logging.getLogger(__name__)

PURGE_BATCH = 1000
PURGE_TIME_BUDGET_S = 20.0


def execution_purge_cutoff(*, days: int | None = None) -> datetime | None:
    """Runs that finished before this are due for deletion (None: keep all)."""
    days = settings.IOLINKER_RETAIN_EXECUTIONS_DAYS if days is None else days
    if days <= 0:
        return None
    return timezone.now() - timedelta(days=days)


def executions_expired(*, days: int | None = None) -> QuerySet[Execution]:
    """Final runs that finished more than ``days`` days ago (default: the setting)."""
    cutoff = execution_purge_cutoff(days=days)
    if cutoff is None:
        return Execution.objects.none()
    # A run finishes after it was created, so its uid is below the cutoff's: the
    # primary key bounds the scan to old rows (no index on finished_at needed).
    return Execution.objects.filter(
        uid__lt=uid_at(cutoff), status__in=FINAL_STATUSES, finished_at__lt=cutoff
    )


def execution_purge(
    *,
    days: int | None = None,
    batch_size: int = PURGE_BATCH,
    time_budget: float = PURGE_TIME_BUDGET_S,
) -> int:
    """Delete expired runs (see the module's docstring), oldest first; how many."""
    deadline = time.monotonic() + time_budget
    deleted = 0
    while True:
        expired = executions_expired(days=days)
        uids = list(expired.order_by("uid").values_list("uid", flat=True)[:batch_size])
        if not uids:
            break
        with transaction.atomic():
            # The conditions again: a run cannot leave a final state, but this
            # keeps the statement honest on its own.
            deleted += expired.filter(uid__in=uids).delete()[1].get(Execution._meta.label, 0)
        if len(uids) < batch_size or time.monotonic() > deadline:
            break
    if deleted:
        logger.info("Purged %s finished executions", deleted)
    return deleted
