import logging
import os

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from iolinker import errors
from iolinker.errors import ApiError
from workflows import engine
from workflows.ids import next_uid
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
    execution = Execution(
        uid=next_uid(), api=api, workflow=workflow, input=trigger_input, created_at=timezone.now()
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
    except Exception as exc:
        logger.exception("Execution %s crashed", uid)
        execution.mark_failed(f"Internal error: {type(exc).__name__}: {exc}")
    else:
        execution.mark_succeeded(output)
    return execution
