import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.models import OrmQ
from django_q.tasks import async_task

from iolinker import errors
from iolinker.errors import ApiError
from triggers.callbacks import callbacks_schedule
from workflows import engine
from workflows.ids import UidUnavailable, next_uid
from workflows.intake import GroupCommit
from workflows.models import Execution, ExecutionStatus, Step, StepRun, Workflow
from workflows.notify import finished_announce, release_pooled_connection

logger = logging.getLogger(__name__)

RUN_TASK = "workflows.tasks.run_executions"
# A batch task hands back the runs it has not started after this share of the
# django-q2 timeout, so the task itself is never killed for running long.
BATCH_TIME_BUDGET = 0.5
# Runs claimed at once: sized so a chunk takes about this long (fast runs are
# claimed and recorded many at a time, slow ones one by one).
CHUNK_SECONDS = 0.25
MAX_CHUNK = 32
# A run going longer than this has its finished steps written as it goes.
STREAM_AFTER_S = 1.0


class _PerProcess:
    """Made after fork: one django-q2 broker (a Redis broker opens a connection
    per instance) and one group-commit intake per process."""

    pid: int | None = None
    broker = None
    capture: "_MessageCapture | None" = None
    intake: GroupCommit | None = None
    # Worker side: the chunk size that last took about CHUNK_SECONDS, and the steps
    # of recently run workflows (expiry, steps), kept IOLINKER_API_CACHE_SECONDS.
    chunk_size = 1
    steps: dict[int, tuple[float, list[Step]]] = {}


_process_lock = threading.Lock()


def _new_process_lock() -> None:
    global _process_lock
    _process_lock = threading.Lock()  # a lock held by another thread at fork stays held


os.register_at_fork(after_in_child=_new_process_lock)


def _process() -> type[_PerProcess]:
    if _PerProcess.pid != os.getpid():
        # Hold no pooled connection while waiting: the thread making the state needs
        # one (django-q2's broker reads the autocommit flag), and threads parked here
        # holding all of them deadlocked a web process (found by the benchmark).
        release_pooled_connection()
        with _process_lock:
            if _PerProcess.pid != os.getpid():
                _process_start()
    return _PerProcess


def _process_start() -> None:
    from django_q.brokers import get_broker

    _PerProcess.broker = get_broker()
    _PerProcess.capture = _MessageCapture() if _queue_is_transactional() else None
    _PerProcess.intake = GroupCommit(
        _commit_batch,
        inline=lambda: connection.in_atomic_block,
        before_wait=release_pooled_connection,
        when_idle=_release_idle_connection,
        # No request signals in the committer thread: drop a broken connection
        # ourselves, or every later batch would fail on it.
        after_error=lambda: connection.close_if_unusable_or_obsolete(),
    )
    _PerProcess.pid = os.getpid()


def workflow_create(
    *, name: str, steps: list[tuple[str, str, dict]], description: str = ""
) -> Workflow:
    """A workflow with its steps (key, type, config) in order, each validated."""
    with transaction.atomic():
        workflow = Workflow.objects.create(name=name, description=description)
        for position, (key, step_type, config) in enumerate(steps, start=1):
            step = Step(
                workflow=workflow, position=position, key=key, type=step_type, config=config
            )
            step.full_clean()
            step.save()
    return workflow


def _release_idle_connection() -> None:
    """The committer thread, with nothing to write for a while, gives its
    connection back (to the pool, or closes it; reopened on next use)."""
    connection.close()


def _queue_is_transactional() -> bool:
    """The ORM broker writes its message in our database, so in our transaction."""
    from django_q.conf import Conf

    return bool(Conf.ORM)


def execution_enqueue(*, uids: list[int], broker=None) -> None:
    """One queue message for a list of runs (a worker runs them in order)."""
    async_task(
        RUN_TASK, uids, task_name=f"{uids[0]}+{len(uids) - 1}", broker=broker or _process().broker
    )


def execution_start(*, workflow: Workflow, trigger_input: dict, api=None) -> Execution:
    """Record a queued run and queue it (see execution_queue); the run, in memory."""
    now = timezone.now()
    uid = execution_queue(
        workflow_id=workflow.pk, api_id=api.pk if api else None, trigger_input=trigger_input
    )
    return Execution(
        uid=uid, api=api, workflow=workflow, input=trigger_input, created_at=now, queued_at=now
    )


@dataclass(slots=True)
class _NewRun:
    """A run to write (a model instance costs ~25 µs to build on the trigger path)."""

    uid: int
    workflow_id: int
    api_id: int | None
    input: dict
    at: datetime


def execution_queue(*, workflow_id: int, api_id: int | None, trigger_input: dict) -> int:
    """Record a queued run and queue it; return its uid only once both are durable.

    Concurrent calls in a process are committed together (workflows/intake.py).
    ORM broker: the runs and their queue message commit in one statement (one
    transaction on SQLite).
    Redis broker: the runs commit first, then the message is pushed; if the push
    fails the runs are removed and the callers get a 503 (a process dying in
    between leaves `queued` rows, which the sweeper pushes again).
    """
    try:
        uid = next_uid()
    except UidUnavailable as exc:
        logger.error("Cannot issue an execution uid: %s", exc)
        raise ApiError(errors.UNAVAILABLE) from exc
    _process().intake.submit(_NewRun(uid, workflow_id, api_id, trigger_input, timezone.now()))
    return uid


def _commit_batch(runs: list[_NewRun]) -> None:
    uids = [run.uid for run in runs]
    if not _queue_is_transactional():
        _insert_queued(runs)
        try:
            execution_enqueue(uids=uids)
        except Exception as exc:
            logger.error("Could not queue executions %s: %s", uids, exc)
            Execution.objects.filter(uid__in=uids).delete()
            raise ApiError(
                errors.UNAVAILABLE, "The run queue is unavailable, try again later"
            ) from exc
    elif _one_statement():
        # django-q2 builds and signs the message; we write it with the runs.
        capture = _process().capture
        execution_enqueue(uids=uids, broker=capture)
        _insert_queued(runs, message=(capture.list_key, capture.take(), timezone.now()))
    else:
        with transaction.atomic():
            _insert_queued(runs)
            execution_enqueue(uids=uids)


def _one_statement() -> bool:
    """PostgreSQL with django-q2's queue table in the same database: runs and their
    message go in one statement, atomic without BEGIN/COMMIT round trips."""
    from django_q.conf import Conf

    return connection.vendor == "postgresql" and connection.alias == Conf.ORM


class _MessageCapture(ORM):
    """django-q2's ORM broker, except that ``enqueue`` keeps the signed message
    (per thread) instead of saving it, so that the trigger path can write it in
    the statement that writes the runs it carries."""

    def __init__(self):
        super().__init__()
        self._local = threading.local()

    def enqueue(self, task: str) -> None:
        self._local.payload = task

    def take(self) -> str:
        payload, self._local.payload = self._local.payload, None
        return payload


def _insert_queued(runs: list[_NewRun], *, message: tuple | None = None) -> None:
    """Write new queued runs in one INSERT, and with ``message`` (key, payload,
    lock) django-q2's queue row in the same statement.

    On PostgreSQL: plain SQL with server-side parameters, in one round trip. The
    ORM's bulk_create (client-side binding, UNNEST arrays of quoted JSON text)
    cost about 4x the web process CPU per run (measured 105 vs 26 µs per row),
    and each round trip costs ~150 µs of CPU on our VMs (BEGIN and COMMIT are two).
    """
    if connection.vendor != "postgresql":
        Execution.objects.bulk_create(
            Execution(
                uid=run.uid,
                workflow_id=run.workflow_id,
                api_id=run.api_id,
                input=run.input,
                created_at=run.at,
                queued_at=run.at,
            )
            for run in runs
        )
        return
    import psycopg

    table = connection.ops.quote_name(Execution._meta.db_table)
    row = "(%s, %s, %s, 'queued', %s::jsonb, NULL, '', 0, %s, %s, NULL, NULL)"
    sql = (
        f"INSERT INTO {table} (uid, api_id, workflow_id, status, input, output, error, "  # noqa: S608
        f"attempts, created_at, queued_at, started_at, finished_at) VALUES "
        + ", ".join([row] * len(runs))
    )
    params = []
    for run in runs:
        params += (run.uid, run.api_id, run.workflow_id, _json(run.input), run.at, run.at)
    if message is not None:
        # A data-modifying CTE always runs to completion, in the statement's
        # transaction: both rows are written, or neither.
        queue = connection.ops.quote_name(OrmQ._meta.db_table)
        sql = f"WITH runs AS ({sql}) INSERT INTO {queue} (key, payload, lock) VALUES (%s, %s, %s)"  # noqa: S608
        params += message
    connection.ensure_connection()
    # Django's cursor wrapper around a server-side binding cursor: Django's error
    # classes, query logging (assertNumQueries) and execute wrappers still apply.
    raw = psycopg.Cursor(connection.connection)
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with wrap(raw) as cursor:
        cursor.execute(sql, params)


def _json(value) -> str:
    # As JSONField stores it (json.dumps, no custom encoder).
    return json.dumps(value)


def execution_run(*, uid: int) -> Execution | None:
    """Claim and run one queued execution; None when someone else claimed it."""
    if execution_run_batch(uids=[uid]):
        return Execution.objects.get(uid=uid)
    return None


def execution_worker_may_steal() -> bool:
    """Whether workers may run queued runs of other messages. Not with Redis: there
    a batch's runs commit before its message is pushed, and a failed push deletes
    them and answers 503, which must not happen to a run a worker already took."""
    return _queue_is_transactional()


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
    state = _process()
    pending, ran = list(uids), []
    while pending or steal:
        if time.monotonic() > budget_end:
            if pending:
                logger.info("Batch over its time budget; re-queueing %s runs", len(pending))
                execution_enqueue(uids=pending)
            break
        started = time.monotonic()
        if pending:
            chunk, pending = pending[: state.chunk_size], pending[state.chunk_size :]
            executions = _claim(chunk)
        else:
            executions = _claim_oldest(state.chunk_size)
            if not executions:
                break
        if executions:
            _run_chunk(executions)
            ran += list(executions)
            per_run = (time.monotonic() - started) / len(executions)
            state.chunk_size = max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(per_run, 1e-4))))
    return ran


def _claim(uids: list[int]) -> dict[int, Execution]:
    """Claim the still-queued runs among ``uids`` and load them, in one statement."""
    marks = ", ".join(["%s"] * len(uids))
    claimed = _claim_where(f"uid IN ({marks})", uids)
    skipped = len(uids) - len(claimed)
    if skipped:
        logger.info("%s execution(s) not queued (already claimed or gone); skipped", skipped)
    return {uid: claimed[uid] for uid in uids if uid in claimed}


def _claim_oldest(limit: int) -> dict[int, Execution]:
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
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    table = connection.ops.quote_name(Execution._meta.db_table)
    return {
        execution.uid: execution
        for execution in Execution.objects.raw(
            f"UPDATE {table} SET status = %s, started_at = %s, attempts = attempts + 1 "  # noqa: S608
            f"WHERE {condition} AND status = %s RETURNING *",
            [ExecutionStatus.RUNNING, now, *params, ExecutionStatus.QUEUED],
        )
    }


def _workflow_steps(workflow_id: int) -> list[Step]:
    state, now = _process(), time.monotonic()
    cached = state.steps.get(workflow_id)
    if cached is None or cached[0] <= now:
        cached = (
            now + settings.IOLINKER_API_CACHE_SECONDS,
            list(Step.objects.filter(workflow_id=workflow_id)),
        )
        state.steps[workflow_id] = cached
    return cached[1]


def _run_chunk(executions: dict[int, Execution]) -> None:
    claimed = list(executions)
    step_runs: list[StepRun] = []
    finished: list[Execution] = []
    started: set[int] = set()
    try:
        for uid in claimed:
            execution = executions[uid]
            started.add(uid)
            _run_one(execution, _workflow_steps(execution.workflow_id), step_runs)
            finished.append(execution)
    except BaseException as exc:
        # django-q2's TimeoutException (a SystemExit), KeyboardInterrupt, a bug:
        # record what finished, fail the interrupted run, hand back the rest.
        for uid in started:
            execution = executions[uid]
            if execution not in finished:
                logger.error("Execution %s interrupted: %r", uid, exc)
                _finish(execution, False, None, f"The run was stopped by its worker: {exc!r}")
                finished.append(execution)
        _save(finished, step_runs)
        unstarted = [uid for uid in claimed if uid not in started]
        if unstarted:
            Execution.objects.filter(uid__in=unstarted).update(
                status=ExecutionStatus.QUEUED, started_at=None
            )
            execution_enqueue(uids=unstarted)
        raise
    _save(finished, step_runs)


def _run_one(execution: Execution, steps: list[Step], step_runs: list[StepRun]) -> None:
    t0 = time.monotonic()
    own: list[StepRun] = []

    def record(step_run: StepRun) -> None:
        own.append(step_run)
        if time.monotonic() - t0 > STREAM_AFTER_S:
            # A long run: make its progress visible now rather than at the end.
            StepRun.objects.bulk_create(own)
            own.clear()

    outcome = engine.run_steps(execution, steps, record)
    step_runs.extend(own)
    _finish(execution, outcome.succeeded, outcome.output, outcome.error)


def _finish(execution: Execution, succeeded: bool, output, error: str) -> None:
    execution.status = ExecutionStatus.SUCCEEDED if succeeded else ExecutionStatus.FAILED
    execution.output = output
    execution.error = error
    execution.finished_at = timezone.now()


def _save(finished: list[Execution], step_runs: list[StepRun]) -> None:
    """One transaction for a chunk: its step runs and the runs' final states.

    A plain parameterized UPDATE per run through executemany (pipelined by
    psycopg) instead of bulk_update, whose CASE/WHEN building cost more CPU
    than running the reference workflow itself.
    """
    if not finished and not step_runs:
        return
    ops = connection.ops
    table = ops.quote_name(Execution._meta.db_table)
    output_field = Execution._meta.get_field("output")
    rows = [
        (
            e.status,
            output_field.get_db_prep_value(e.output, connection),
            e.error,
            ops.adapt_datetimefield_value(e.finished_at),
            e.uid,
        )
        for e in finished
    ]
    with transaction.atomic():
        StepRun.objects.bulk_create(step_runs)
        if rows:
            with connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET status = %s, output = %s, error = %s, "  # noqa: S608
                    "finished_at = %s WHERE uid = %s",
                    rows,
                )
            finished_announce([e.uid for e in finished])
            callbacks_schedule(finished)


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
    stale = Execution.objects.filter(
        status=ExecutionStatus.RUNNING, started_at__lt=now - stale_after
    )
    with transaction.atomic():
        # Locked (SQLite: the write lock), so these are the runs the update fails.
        lost = list(stale.select_for_update().only("uid", "api_id"))
        failed = stale.update(
            status=ExecutionStatus.FAILED,
            finished_at=now,
            error="The worker running this execution stopped without finishing it "
            "(killed, out of memory or past the run timeout)",
        )
        callbacks_schedule(lost)
    requeued = 0
    if not _queue_is_transactional():
        cutoff = now - timedelta(seconds=settings.IOLINKER_REQUEUE_AFTER)
        stale = Execution.objects.filter(status=ExecutionStatus.QUEUED, queued_at__lt=cutoff)
        uids = list(stale.values_list("uid", flat=True)[:5000])
        if uids:
            # Only those still queued when we mark them (another sweeper may race us).
            marked = Execution.objects.filter(uid__in=uids, status=ExecutionStatus.QUEUED)
            requeued = marked.update(queued_at=now)
            if requeued:
                # Push only the runs this sweep marked, not ones claimed meanwhile.
                mine = Execution.objects.filter(
                    uid__in=uids, status=ExecutionStatus.QUEUED, queued_at=now
                )
                if mine_uids := list(mine.values_list("uid", flat=True)):
                    execution_enqueue(uids=mine_uids)
    if failed or requeued:
        logger.warning("Recovered stale executions: %s failed, %s re-queued", failed, requeued)
    return {"failed": failed, "requeued": requeued}
