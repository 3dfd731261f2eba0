"""The run's status machine: every change of an ``Execution``'s status (and of
its lease and cancel flag) is one of the named transitions below. Hot-path SQL
stays raw, named after the transition it performs. Each is a conditional write
(fenced by status, attempt or lease), so two processes racing over a run cannot
both win, except *hand back* and *continue child*, which change runs their
caller already holds (its own claimed, unstarted runs; its own child).

=============  ==========================  ===================  =====================
transition     from                        to                   who
=============  ==========================  ===================  =====================
(intake)       (none)                      queued               intake, re-run, child
claim          queued                      running (+ lease)    worker
record         running (same attempt)      final or waiting     worker, end of chunk
hand back      running (claimed, unrun)    queued               worker, task stopping
end            queued, waiting, running    cancelled / failed   cancel, reaper
requeue        running (lease lapsed)      queued               reaper
requeue        waiting (due), queued (old) queued               resume, reaper (Redis)
renew leases   running                     running              watch thread
continue child any non-final child         running              parent run, in place
request cancel any non-final               (same) + flag        cancel
=============  ==========================  ===================  =====================

Final statuses: succeeded, failed, timed_out, cancelled (``FINAL_STATUSES``).
A transition that ends runs tells ``workflows.hooks`` (completion callbacks) and
the waiters (workflows/notify.py) in the transaction that records it.
"""

import logging
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from workflows.hooks import runs_finished
from workflows.models import FINAL_STATUSES, Execution, ExecutionStatus, WorkflowVersion
from workflows.notify import finished_announce
from workflows.services import queueing

logger = logging.getLogger("workflows.services")


# claim ------------------------------------------------------------------------


def executions_claim(uids: list[int]) -> dict[int, Execution]:
    """Claim the still-queued runs among ``uids`` and load them, in one statement."""
    marks = ", ".join(["%s"] * len(uids))
    claimed = _claim_where(f"uid IN ({marks})", uids)
    skipped = len(uids) - len(claimed)
    if skipped:
        logger.info("%s execution(s) not queued (already claimed or gone); skipped", skipped)
    return {uid: claimed[uid] for uid in uids if uid in claimed}


def executions_claim_oldest(limit: int) -> dict[int, Execution]:
    """Claim up to ``limit`` of the oldest queued runs (index execution_status_uid);
    rows another worker is claiming at the same moment are skipped, not waited for."""
    table = connection.ops.quote_name(Execution._meta.db_table)
    skip_locked = (
        " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    )
    claimed = _claim_where(
        f"uid IN (SELECT uid FROM {table} WHERE status = %s ORDER BY uid LIMIT %s{skip_locked})",  # noqa: S608
        [ExecutionStatus.QUEUED, limit],
    )
    return dict(sorted(claimed.items()))


def _claim_where(condition: str, params: list) -> dict[int, Execution]:
    """Claim: running, a lease, the first start kept (a resumed run's time limit
    counts from it), and the workflow's current version pinned unless it has one."""
    ops = connection.ops
    now = timezone.now()
    lease = now + timedelta(seconds=settings.IOLINKER_RUN_LEASE_SECONDS)
    table = ops.quote_name(Execution._meta.db_table)
    versions = ops.quote_name(WorkflowVersion._meta.db_table)
    return {
        execution.uid: execution
        for execution in Execution.objects.raw(
            f"UPDATE {table} SET status = %s, started_at = COALESCE(started_at, %s), "  # noqa: S608
            "attempts = attempts + 1, lease_until = %s, version_id = COALESCE(version_id, "
            f"(SELECT v.id FROM {versions} v WHERE v.workflow_id = {table}.workflow_id "
            "ORDER BY v.number DESC LIMIT 1)) "
            f"WHERE {condition} AND status = %s RETURNING *",
            [
                ExecutionStatus.RUNNING,
                ops.adapt_datetimefield_value(now),
                ops.adapt_datetimefield_value(lease),
                *params,
                ExecutionStatus.QUEUED,
            ],
        )
    }


# record (the worker's outcomes) -----------------------------------------------


def executions_record(finished: list[Execution]) -> list[Execution]:
    """Write the outcomes the worker set on these claimed runs (final, or waiting
    with a wake-up time); call inside the chunk's transaction. Returns the runs
    whose outcome was written, after announcing those that ended.

    A plain parameterized UPDATE per run through executemany (pipelined by
    psycopg) instead of bulk_update, whose CASE/WHEN building cost more CPU
    than running the reference workflow itself.
    """
    ops = connection.ops
    table = ops.quote_name(Execution._meta.db_table)
    output_field = Execution._meta.get_field("output")
    rows = [
        (
            e.status,
            None if e.output is None else output_field.get_db_prep_value(e.output, connection),
            e.error,
            ops.adapt_datetimefield_value(e.finished_at),
            ops.adapt_datetimefield_value(e.resume_at),
            e.uid,
            e.attempts,
        )
        for e in finished
    ]
    # Fenced by the claim (status and attempt): a worker that lost its run (its
    # lease lapsed and the reaper gave it to another worker, or ended it) cannot
    # overwrite what happened since (found by review).
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET status = %s, output = %s, error = %s, "  # noqa: S608
            "finished_at = %s, resume_at = %s, lease_until = NULL "
            "WHERE uid = %s AND attempts = %s AND status = 'running'",
            rows,
        )
        written = cursor.rowcount
    if written != len(rows):
        finished = _still_ours(finished)
    final = [e for e in finished if e.is_final]
    finished_announce([e.uid for e in final])
    runs_finished(final)
    return finished


def _still_ours(finished: list[Execution]) -> list[Execution]:
    """The runs of ``finished`` whose outcome was written (the others were taken
    back from this worker meanwhile: their outcome is not ours to announce)."""
    stored = dict(
        Execution.objects.filter(uid__in=[e.uid for e in finished]).values_list("uid", "status")
    )
    ours = [e for e in finished if stored.get(e.uid) == e.status]
    for e in finished:
        if e not in ours:
            logger.warning("Execution %s was taken back from this worker; outcome dropped", e.uid)
    return ours


def executions_hand_back(uids: list[int]) -> None:
    """Runs this worker claimed and did not start (its task is stopping): queued
    again, with a new message (a lost push: the reaper pushes them again)."""

    def write() -> list[int]:
        Execution.objects.filter(uid__in=uids).update(
            status=ExecutionStatus.QUEUED, lease_until=None
        )
        return uids

    queueing.write_then_push(write=write, undo=None)


# end, requeue (cancel, resume, the reaper) ------------------------------------


def executions_end(runs: QuerySet[Execution], **fields) -> int:
    """Give these runs a final state (with their finished notification and finish
    hooks, in the same transaction); how many."""
    with transaction.atomic():
        ended = list(runs.select_for_update().only("uid", "api_id"))
        if not ended:
            return 0
        count = runs.filter(uid__in=[e.uid for e in ended]).update(
            finished_at=timezone.now(), lease_until=None, **fields
        )
        finished_announce([e.uid for e in ended])
        runs_finished(ended)
    return count


def executions_requeue(uids: Sequence[int], *, from_status: str, extra: dict) -> int:
    """Mark the runs among ``uids`` still in ``from_status`` as queued and send
    them a message (queueing.write_then_push). Only the runs this call marked are
    sent, never one another process took meanwhile."""
    if not uids:
        return 0

    def write() -> list[int]:
        now = timezone.now()
        mine = list(
            Execution.objects.select_for_update(skip_locked=True)
            .filter(uid__in=uids, status=from_status)
            .values_list("uid", flat=True)
        )
        Execution.objects.filter(uid__in=mine).update(
            status=ExecutionStatus.QUEUED, queued_at=now, lease_until=None, **extra
        )
        return mine

    return len(queueing.write_then_push(write=write, undo=None, atomic_write=True))


# renew leases, continue a child, request cancel -------------------------------


def leases_renew(uids: list[int]) -> None:
    """Push the lease of these running runs forward (the watch thread)."""
    until = timezone.now() + timedelta(seconds=settings.IOLINKER_RUN_LEASE_SECONDS)
    Execution.objects.filter(uid__in=uids, status=ExecutionStatus.RUNNING).update(lease_until=until)


def execution_child_continue(child: Execution) -> None:
    """An unfinished child run its parent resumes in place: running again, one
    attempt more (on ``child`` too)."""
    Execution.objects.filter(uid=child.uid).update(
        status=ExecutionStatus.RUNNING, attempts=child.attempts + 1, resume_at=None
    )
    child.status, child.attempts = ExecutionStatus.RUNNING, child.attempts + 1


def execution_cancel_request(uid: int) -> None:
    """Flag a run for cancelling, whatever its status unless final: a run that
    goes from running to waiting (or back to queued) meanwhile still meets it."""
    Execution.objects.filter(uid=uid).exclude(status__in=FINAL_STATUSES).update(
        cancel_requested=True
    )
