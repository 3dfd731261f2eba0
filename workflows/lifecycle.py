"""Services acting on runs after they were accepted: cancel, re-run, resume
waiting runs, and the reaper that takes runs back from workers that vanished.
Every status change they make is a named transition of
workflows/services/transitions.py."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from workflows.errors import NotCancellable, NotRerunnable
from workflows.models import Execution, ExecutionStatus
from workflows.services import queueing
from workflows.services.intake import execution_queue_one
from workflows.services.transitions import (
    execution_cancel_request,
    executions_end,
    executions_requeue,
)
from workflows.storedjson import Unreadable

logger = logging.getLogger(__name__)
CANCELLED_MESSAGE = "The run was cancelled"


__all__ = [
    "NotCancellable",
    "NotRerunnable",
    "execution_cancel",
    "execution_recover_stale",
    "execution_rerun",
    "execution_resume_due",
]


def execution_cancel(*, uid: int) -> Execution | None:
    """Cancel a run. Queued or waiting: it ends `cancelled` now. Running: its
    worker is asked to stop (within IOLINKER_CANCEL_POLL_MS): the engine stops at
    the next step boundary and kills a running code step; the run then ends
    `cancelled`. Already final: NotCancellable. None when there is no such run."""
    # The flag first, whatever the status: a run that goes from running to
    # waiting (or back to queued) meanwhile still meets it (found by review).
    execution_cancel_request(uid)
    ended = executions_end(
        Execution.objects.filter(
            uid=uid, status__in=[ExecutionStatus.QUEUED, ExecutionStatus.WAITING]
        ),
        status=ExecutionStatus.CANCELLED,
        cancel_requested=True,
        resume_at=None,
        error=CANCELLED_MESSAGE,
    )
    execution = Execution.objects.filter(uid=uid).first()
    already_ended = execution is not None and execution.is_final and not ended
    if already_ended and execution.status != ExecutionStatus.CANCELLED:
        raise NotCancellable(f"The run already ended {execution.status}")
    return execution


def execution_rerun(*, uid: int) -> Execution | None:
    """A new run of the same workflow with the original run's input, linked to it
    (``rerun_of``); None when there is no such run. It runs the workflow's current
    version."""
    original = Execution.objects.filter(uid=uid).first()
    if original is None:
        return None
    if isinstance(original.input, Unreadable):
        raise NotRerunnable(f"Execution {uid} cannot be re-run: its input is {original.input}")
    return execution_queue_one(
        Execution(
            workflow_id=original.workflow_id,
            api_id=original.api_id,
            input=original.input,
            rerun_of=original,
        )
    )


def execution_resume_due() -> int:
    """Queue the waiting runs whose time has come; the number queued."""
    now = timezone.now()
    uids = list(
        Execution.objects.filter(status=ExecutionStatus.WAITING, resume_at__lte=now)
        .order_by("resume_at")
        .values_list("uid", flat=True)[:5000]
    )
    return executions_requeue(uids, from_status=ExecutionStatus.WAITING, extra={"resume_at": None})


def execution_recover_stale() -> dict[str, int]:
    """The reaper (every minute, and callable any time):

    * `running` with a lapsed lease: its worker stopped renewing (SIGKILL, out of
      memory, machine lost). Taken back and queued again: the run resumes after
      its last recorded step, without repeating finished steps. After
      IOLINKER_RUN_MAX_RECOVERIES such recoveries it is failed instead. Children
      a sub-workflow step runs in place are left to their parent run.
    * `waiting` past its time (a lost schedule): queued.
    * `queued` for IOLINKER_REQUEUE_AFTER with the Redis broker (at-most-once
      delivery; a crash between commit and push): the message is pushed again.
      A duplicate message is harmless: the claim lets only one delivery run.
    """
    now = timezone.now()
    lapsed = Q(status=ExecutionStatus.RUNNING) & (
        Q(lease_until__lt=now)
        | Q(
            lease_until__isnull=True,
            started_at__lt=now - timedelta(seconds=settings.IOLINKER_RUN_TIMEOUT + 120),
        )
    )
    top_level = Q(parent_step="")
    failed = executions_end(
        Execution.objects.filter(
            lapsed & top_level, recoveries__gte=settings.IOLINKER_RUN_MAX_RECOVERIES
        ),
        status=ExecutionStatus.FAILED,
        error="The worker running this execution stopped without finishing it "
        f"(killed, out of memory or lost), {settings.IOLINKER_RUN_MAX_RECOVERIES + 1} times",
    )
    # Children of runs that ended meanwhile have no one left to resume them.
    orphans = executions_end(
        Execution.objects.filter(
            (lapsed | Q(status=ExecutionStatus.WAITING)) & ~top_level,
            parent__status__in=[
                ExecutionStatus.SUCCEEDED,
                ExecutionStatus.FAILED,
                ExecutionStatus.CANCELLED,
                ExecutionStatus.TIMED_OUT,
            ],
        ),
        status=ExecutionStatus.FAILED,
        error="Its parent run ended while this sub-workflow run was in progress",
    )
    stale = list(
        Execution.objects.filter(lapsed & top_level)
        .order_by("uid")
        .values_list("uid", flat=True)[:5000]
    )
    recovered = executions_requeue(
        stale, from_status=ExecutionStatus.RUNNING, extra={"recoveries": F("recoveries") + 1}
    )
    resumed = execution_resume_due()
    requeued = 0
    if not queueing.queue_is_transactional():
        cutoff = now - timedelta(seconds=settings.IOLINKER_REQUEUE_AFTER)
        stale_queued = Execution.objects.filter(status=ExecutionStatus.QUEUED, queued_at__lt=cutoff)
        uids = list(stale_queued.values_list("uid", flat=True)[:5000])
        requeued = executions_requeue(uids, from_status=ExecutionStatus.QUEUED, extra={})
    counts = {
        "failed": failed + orphans,
        "recovered": recovered,
        "resumed": resumed,
        "requeued": requeued,
    }
    if any(counts.values()):
        logger.warning("Recovered stale executions: %s", counts)
    return counts
