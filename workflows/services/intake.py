"""Queueing new runs: "queue a run" is ``execution_queue`` (a call of an API: the
hot path, group-committed with the concurrent calls of this process,
workflows/intake.py) or ``execution_queue_one`` (a run prepared as an
``Execution``: a re-run, a sub-workflow child, a run by hand). Both record a
``queued`` run and push its message through ``queueing`` and answer only once both
are durable. For callers that write more in the same transaction (triggers'
idempotency keys) the pieces are public: ``execution_uid_new``, ``run_new`` and
``sql.executions_insert`` inside ``queueing.write_then_push``.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from iolinker.errors import ApiError
from workflows import ids
from workflows.errors import InputUnstorable, UidUnavailable, Unavailable
from workflows.intake import GroupCommit
from workflows.models import Execution, ExecutionStatus
from workflows.notify import release_pooled_connection
from workflows.services import queueing, sql
from workflows.storedjson import Unstorable, stored_text

logger = logging.getLogger("workflows.services")


@dataclass(slots=True)
class NewRun:
    """A run to write (a model instance costs ~25 µs to build on the trigger path).
    ``input``: the text the run's input is stored as, checked (workflows/storedjson.py)."""

    uid: int
    workflow_id: int
    api_id: int | None
    input: str
    at: datetime


def run_new(uid: int, workflow_id: int, api_id: int | None, trigger_input: dict) -> NewRun:
    """A run to write, in the calling request's thread: a value no database can
    store or read back is refused here (InputUnstorable), alone, before it joins
    a batch."""
    try:
        text = stored_text(trigger_input)
    except Unstorable as exc:
        raise InputUnstorable(f"The request {exc}") from None
    return NewRun(uid, workflow_id, api_id, text, timezone.now())


def execution_uid_new() -> int:
    """A new run's uid (outside any transaction: its lease commits on its own);
    ``Unavailable`` when none can be issued now."""
    try:
        return ids.next_uid()
    except UidUnavailable as exc:
        logger.error("Cannot issue an execution uid: %s", exc)
        raise Unavailable() from exc


def execution_queue(*, workflow_id: int, api_id: int | None, trigger_input: dict) -> int:
    """Record a queued run and queue it; return its uid only once both are durable.

    Concurrent calls in a process are committed together (workflows/intake.py).
    ORM broker: the runs and their queue message commit in one statement (one
    transaction on SQLite). Redis broker: the runs commit first, then the message
    is pushed; if the push fails the runs are removed and the callers get
    QueueUnavailable (queueing.write_then_push).
    """
    uid = execution_uid_new()
    queueing.process().intake.submit(run_new(uid, workflow_id, api_id, trigger_input))
    return uid


def execution_queue_one(execution: Execution) -> Execution:
    """Write one new queued run prepared as an ``Execution`` (re-runs, sub-workflow
    children, runs by hand) and queue it, as execution_queue does."""
    if execution.uid is None:
        execution.uid = execution_uid_new()
    execution.status = ExecutionStatus.QUEUED

    def write() -> list[int]:
        execution.save(force_insert=True)
        return [execution.uid]

    queueing.write_then_push(write=write, undo=lambda uids: execution.delete())
    return execution


def may_be_one_runs_fault(exc: BaseException) -> bool:
    """Whether a failed batch should be written again run by run: not when the
    database or the queue is unavailable (every run would fail the same way)."""
    if isinstance(exc, (OperationalError, InterfaceError, Unavailable)):
        return False
    return not (isinstance(exc, ApiError) and exc.spec.status >= 500)


def _commit_batch(runs: list[NewRun]) -> None:
    """The committer thread's write of a batch of runs and their message."""
    if queueing.queue_is_transactional() and queueing.queue_in_same_statement():
        # django-q2 builds and signs the message; we write it with the runs.
        capture = queueing.process().capture
        queueing.queue_push(uids=[run.uid for run in runs], broker=capture)
        sql.executions_insert(runs, message=(capture.list_key, capture.take(), timezone.now()))
        return

    def write() -> list[int]:
        sql.executions_insert(runs)
        return [run.uid for run in runs]

    queueing.write_then_push(write=write, undo=_runs_delete)


def _runs_delete(uids) -> None:
    Execution.objects.filter(uid__in=uids).delete()


def _release_idle_connection() -> None:
    """The committer thread, with nothing to write for a while, gives its
    connection back (to the pool, or closes it; reopened on next use)."""
    connection.close()


def _intake_start(state) -> None:
    state.intake = GroupCommit(
        _commit_batch,
        inline=lambda: connection.in_atomic_block,
        before_wait=release_pooled_connection,
        when_idle=_release_idle_connection,
        # No request signals in the committer thread: drop a broken connection
        # ourselves, or every later batch would fail on it.
        after_error=lambda: connection.close_if_unusable_or_obsolete(),
        retry_alone=may_be_one_runs_fault,
    )


queueing.process_starter_register(_intake_start)
