"""The worker's loop: a django-q2 task hands over a list of run uids; the worker
claims a few at a time (``transitions.executions_claim``), runs them and records
a chunk's outcomes in one transaction (workflows/services/running.py). The chunk
size adapts so a chunk takes about CHUNK_SECONDS; with ``steal`` it goes on with
the oldest queued runs of any message.
"""

import contextlib
import logging
import time

from django.conf import settings

from workflows import engine
from workflows.models import Execution, ExecutionStatus, StepRun
from workflows.services import queueing, transitions
from workflows.services.running import chunk_save, run_finish, run_one
from workflows.watch import run_watch_hold, run_watch_release

logger = logging.getLogger("workflows.services")

# A batch task hands back the runs it has not started after this share of the
# django-q2 timeout, so the task itself is never killed for running long.
BATCH_TIME_BUDGET = 0.5
# Runs claimed at once: sized so a chunk takes about this long (fast runs are
# claimed and recorded many at a time, slow ones one by one).
CHUNK_SECONDS = 0.25
MAX_CHUNK = 32


def execution_run(*, uid: int) -> Execution | None:
    """Claim and run one queued execution; None when someone else claimed it."""
    if execution_run_batch(uids=[uid]):
        return Execution.objects.get(uid=uid)
    return None


def execution_worker_may_steal() -> bool:
    """Whether workers may run queued runs of other messages. Not with Redis: there
    a batch's runs commit before its message is pushed, and a failed push deletes
    them and answers 503, which must not happen to a run a worker already took."""
    return queueing.queue_is_transactional()


def execution_run_batch(*, uids: list[int], steal: bool = False) -> list[int]:
    """Run the queued executions among ``uids``, claiming a few at a time.

    Each claim is a conditional UPDATE ... RETURNING: a run already claimed
    (a redelivered or duplicated message, or a run another worker took) is
    skipped, so no run happens twice. Results of fast runs are written together,
    one transaction per chunk. With ``steal``, the worker then goes on with the
    oldest queued runs of any message while there are some (their own messages
    find them claimed and cost one query): runs are claimed in chunks as large as
    suits them even when each message carries only a run or two.
    Returns the uids it ran.
    """
    budget_end = time.monotonic() + settings.IOLINKER_RUN_TIMEOUT * BATCH_TIME_BUDGET
    pending, ran = list(uids), []
    try:
        _run_batch(pending, ran, steal=steal, budget_end=budget_end)
    except BaseException:
        # A chunk failed (a bug, a database error): the message is acknowledged
        # (ack_failures) and no sweeper looks at `queued` runs with the ORM broker,
        # so this message's unclaimed runs get a new one (found by review).
        if pending:
            with contextlib.suppress(Exception):
                queueing.queue_push(uids=pending)
        raise
    return ran


def _run_batch(pending: list[int], ran: list[int], *, steal: bool, budget_end: float) -> None:
    """execution_run_batch's loop; takes from ``pending`` as it claims."""
    state = queueing.process()
    while pending or steal:
        if time.monotonic() > budget_end:
            if pending:
                logger.info("Batch over its time budget; re-queueing %s runs", len(pending))
                queueing.queue_push(uids=list(pending))
                pending.clear()
            break
        started = time.monotonic()
        if pending:
            chunk = pending[: state.chunk_size]
            del pending[: state.chunk_size]
            executions = transitions.executions_claim(chunk)
        else:
            executions = transitions.executions_claim_oldest(state.chunk_size)
            if not executions:
                break
        if executions:
            _run_chunk(executions)
            ran += list(executions)
            per_run = (time.monotonic() - started) / len(executions)
            state.chunk_size = max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(per_run, 1e-4))))


def _run_chunk(executions: dict[int, Execution]) -> None:
    claimed = list(executions)
    # Their leases are renewed from now until their outcomes are saved: a run
    # waiting its turn in the chunk, or finished and not yet saved, must not look
    # abandoned to the reaper (it would be run again elsewhere).
    run_watch_hold(claimed)
    try:
        _run_claimed(executions, claimed)
    finally:
        run_watch_release(claimed)


def _run_claimed(executions: dict[int, Execution], claimed: list[int]) -> None:
    step_runs: list[StepRun] = []
    finished: list[Execution] = []
    started: set[int] = set()
    try:
        for uid in claimed:
            execution = executions[uid]
            started.add(uid)
            run_one(execution, step_runs)
            finished.append(execution)
    except BaseException as exc:
        # django-q2's TimeoutException (a SystemExit), KeyboardInterrupt, a bug:
        # record what finished, fail the interrupted run, hand back the rest.
        for uid in started:
            execution = executions[uid]
            if execution not in finished:
                logger.error("Execution %s interrupted: %r", uid, exc)
                run_finish(
                    execution,
                    engine.Outcome(
                        ExecutionStatus.FAILED,
                        error=f"The run was stopped by its worker: {exc!r}",
                    ),
                )
                finished.append(execution)
        chunk_save(finished, step_runs)
        unstarted = [uid for uid in claimed if uid not in started]
        if unstarted:
            transitions.executions_hand_back(unstarted)
        raise
    chunk_save(finished, step_runs)
