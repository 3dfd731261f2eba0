import logging
import os
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from iolinker import errors
from iolinker.errors import ApiError
from workflows import engine
from workflows.ids import UidUnavailable, next_uid
from workflows.models import Execution, ExecutionStatus, Workflow

logger = logging.getLogger(__name__)

RUN_TASK = "workflows.tasks.run_execution"


class _Broker:
    """One django-q2 broker per process, made after fork (a Redis broker opens a
    connection per instance; making one per enqueue costs 2.5x)."""

    pid: int | None = None
    broker = None


def _broker():
    if _Broker.pid != os.getpid():
        from django_q.brokers import get_broker

        _Broker.broker, _Broker.pid = get_broker(), os.getpid()
    return _Broker.broker


def _queue_is_transactional() -> bool:
    """The ORM broker writes its message in our database, so in our transaction."""
    from django_q.conf import Conf

    return bool(Conf.ORM)


def execution_enqueue(*, uid: int) -> None:
    async_task(RUN_TASK, uid, task_name=str(uid), broker=_broker())


def execution_start(*, workflow: Workflow, trigger_input: dict, api=None) -> Execution:
    """Record a queued run and queue it; return only once both are durable.

    ORM broker: the execution row and the queue message commit in one
    transaction. Redis broker: the row commits first, then the message is
    pushed; if the push fails the row is removed and the caller gets a 503
    (a process dying in between leaves a `queued` row for a sweeper).
    """
    now = timezone.now()
    try:
        uid = next_uid()
    except UidUnavailable as exc:
        logger.error("Cannot issue an execution uid: %s", exc)
        raise ApiError(errors.UNAVAILABLE) from exc
    execution = Execution(
        uid=uid,
        api=api,
        workflow=workflow,
        input=trigger_input,
        created_at=now,
        queued_at=now,
    )
    if _queue_is_transactional():
        with transaction.atomic():
            execution.save(force_insert=True)
            execution_enqueue(uid=execution.uid)
        return execution
    execution.save(force_insert=True)
    try:
        execution_enqueue(uid=execution.uid)
    except Exception as exc:
        logger.error("Could not queue execution %s: %s", execution.uid, exc)
        Execution.objects.filter(uid=execution.uid).delete()
        raise ApiError(errors.UNAVAILABLE, "The run queue is unavailable, try again later") from exc
    return execution


def execution_run(*, uid: int) -> Execution | None:
    """Claim a queued execution and run it; None when someone else claimed it.

    The conditional UPDATE makes a redelivered or duplicated task a no-op.
    """
    claimed = Execution.objects.filter(uid=uid, status=ExecutionStatus.QUEUED).update(
        status=ExecutionStatus.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1
    )
    if not claimed:
        logger.info("Execution %s is not queued (already claimed or gone); skipping", uid)
        return None
    execution = Execution.objects.select_related("workflow").get(uid=uid)
    try:
        output = engine.run_steps(execution, list(execution.workflow.steps.all()))
    except engine.RunFailed as exc:
        execution.mark_failed(str(exc))
    except BaseException as exc:
        # Also django-q2's TimeoutException (a SystemExit) and KeyboardInterrupt:
        # record the end of the run, then let the worker go down as it wanted.
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            execution.mark_failed(f"The run was stopped by its worker: {exc}")
            raise
        logger.exception("Execution %s crashed", uid)
        execution.mark_failed(f"Internal error: {type(exc).__name__}: {exc}")
    else:
        execution.mark_succeeded(output)
    return execution


def execution_recover_stale() -> dict[str, int]:
    """End runs whose worker vanished; re-queue runs whose queue message was lost.

    * `running` longer than the run timeout (+2 min): the worker was killed
      (SIGKILL, OOM, machine lost) before it could record anything -> failed.
    * `queued` for IOLINKER_REQUEUE_AFTER with a non-transactional broker
      (Redis: at-most-once delivery, a crash between commit and push) -> the
      message is pushed again. A duplicate message is harmless: the claim
      lets only one delivery run.
    """
    now = timezone.now()
    stale_after = timedelta(seconds=settings.IOLINKER_RUN_TIMEOUT + 120)
    failed = Execution.objects.filter(
        status=ExecutionStatus.RUNNING, started_at__lt=now - stale_after
    ).update(
        status=ExecutionStatus.FAILED,
        finished_at=now,
        error="The worker running this execution stopped without finishing it "
        "(killed, out of memory or past the run timeout)",
    )
    requeued = 0
    if not _queue_is_transactional():
        cutoff = now - timedelta(seconds=settings.IOLINKER_REQUEUE_AFTER)
        stale = Execution.objects.filter(status=ExecutionStatus.QUEUED, queued_at__lt=cutoff)
        for uid in stale.values_list("uid", flat=True)[:5000]:
            if Execution.objects.filter(uid=uid, status=ExecutionStatus.QUEUED).update(
                queued_at=now
            ):
                execution_enqueue(uid=uid)
                requeued += 1
    if failed or requeued:
        logger.warning("Recovered stale executions: %s failed, %s re-queued", failed, requeued)
    return {"failed": failed, "requeued": requeued}
