import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.models import OrmQ
from django_q.tasks import async_task

from iolinker import errors
from iolinker.errors import ApiError
from workflows import engine
from workflows.definition import (
    code_step_guard,
    definition_errors,
    definition_from_workflow,
    workflow_version_save,
)
from workflows.hooks import runs_finished
from workflows.ids import UidUnavailable, next_uid
from workflows.intake import GroupCommit
from workflows.models import (
    EnvironmentVariable,
    Execution,
    ExecutionStatus,
    Step,
    StepRun,
    Workflow,
    WorkflowVersion,
)
from workflows.notify import finished_announce, release_pooled_connection
from workflows.steps import StepError
from workflows.storedjson import Unreadable, Unstorable, stored_text
from workflows.watch import (
    run_watch_hold,
    run_watch_register,
    run_watch_release,
    run_watch_unregister,
)

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
    # Worker side: the chunk size that last took about CHUNK_SECONDS, definitions
    # of workflow versions (immutable, so kept), and the environment variables
    # (expiry, values), kept IOLINKER_API_CACHE_SECONDS.
    chunk_size = 1
    versions: dict[int, dict] = {}
    env: tuple[float, dict] = (0.0, {})


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
        retry_alone=_may_be_one_runs_fault,
    )
    _PerProcess.pid = os.getpid()


def _may_be_one_runs_fault(exc: BaseException) -> bool:
    """Whether a failed batch should be written again run by run: not when the
    database or the queue is unavailable (every run would fail the same way)."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return False
    return not (isinstance(exc, ApiError) and exc.spec.status >= 500)


def workflow_create(
    *,
    name: str,
    steps: list[tuple[str, str, dict] | dict],
    description: str = "",
    variables: dict | None = None,
    timeout_seconds: int | None = None,
    user=None,
) -> Workflow:
    """A workflow with its steps in order, each a (key, type, config) tuple or a
    step of the definition format (workflows/definition.py); all validated, and
    saved as version 1. Code steps (at any depth) only for a ``user`` who may add
    them (``code_step_guard``; None: a trusted caller)."""
    with transaction.atomic():
        workflow = Workflow.objects.create(
            name=name,
            description=description,
            variables=variables or {},
            timeout_seconds=timeout_seconds,
        )
        for position, spec in enumerate(steps, start=1):
            if not isinstance(spec, dict):
                spec = dict(zip(("key", "type", "config"), spec, strict=True))
            step = Step(workflow=workflow, position=position, **spec)
            step.full_clean()
            step.save()
        definition = definition_from_workflow(workflow)
        code_step_guard(steps=definition["steps"], user=user)
        problems = definition_errors(definition)
        if problems:
            raise ValidationError(problems)
        workflow_version_save(workflow=workflow)
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
    """A run to write (a model instance costs ~25 µs to build on the trigger path).
    ``input``: the text the run's input is stored as, checked (workflows/storedjson.py)."""

    uid: int
    workflow_id: int
    api_id: int | None
    input: str
    at: datetime


def _new_run(uid: int, workflow_id: int, api_id: int | None, trigger_input: dict) -> _NewRun:
    """A run to write, in the calling request's thread: a value no database can
    store or read back is refused here (400), alone, before it joins a batch."""
    try:
        text = stored_text(trigger_input)
    except Unstorable as exc:
        raise ApiError(errors.INVALID_PARAMS, f"The request {exc}") from None
    return _NewRun(uid, workflow_id, api_id, text, timezone.now())


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
    _process().intake.submit(_new_run(uid, workflow_id, api_id, trigger_input))
    return uid


def execution_queue_once(
    *,
    workflow_id: int,
    api_id: int | None,
    trigger_input: dict,
    reserve: Callable[[int], int | None],
    release: Callable[[int], None],
) -> tuple[int, bool]:
    """Record a queued run and queue it, unless ``reserve`` names an earlier run.

    Returns ``(uid, False)`` for a new run once it is durable (as execution_queue
    does), or ``(earlier uid, True)`` when nothing was written. For idempotency
    keys (triggers/services.py, api_call_once), and only them.

    ``reserve(uid)`` runs first in the transaction that writes the run: it records
    a claim (the key row) naming this uid, or returns the uid an existing claim
    names (it may also raise, which writes nothing). The claim and the run
    therefore commit together or not at all, and a concurrent duplicate blocks on
    the claim's unique index until this transaction ends, then sees its outcome.

    Not group-committed (workflows/intake.py): a batch is one transaction for many
    callers, and one caller's conflict or refusal must not fail the others, nor
    may a claim wait on another batch's lock while holding the committer. So the
    request thread writes its own run here: a transaction and two or three more
    statements, paid only by calls that carry a key.

    ORM broker: the claim, the run and its queue message in one transaction.
    Redis broker, as in _commit_batch: the claim and the run commit, then the
    message is pushed; if the push fails, the run and (``release(uid)``) the claim
    are deleted together and the caller gets 503, so a retry with the key starts
    afresh instead of replaying a uid that no longer exists. A process dying
    between commit and push leaves a queued run that the sweeper pushes again;
    meanwhile the key replays its uid, which is right: that run will happen.
    """
    try:
        uid = next_uid()  # outside the transaction: its lease commits on its own
    except UidUnavailable as exc:
        logger.error("Cannot issue an execution uid: %s", exc)
        raise ApiError(errors.UNAVAILABLE) from exc
    _process()  # before the transaction: it may give back a pooled connection
    transactional = _queue_is_transactional()
    run = _new_run(uid, workflow_id, api_id, trigger_input)
    with transaction.atomic():
        earlier = reserve(uid)
        if earlier is not None:
            return earlier, True
        _insert_queued([run])
        if transactional:
            execution_enqueue(uids=[uid])
    if not transactional:
        try:
            execution_enqueue(uids=[uid])
        except Exception as exc:
            logger.error("Could not queue execution %s: %s", uid, exc)
            with transaction.atomic():
                release(uid)
                Execution.objects.filter(uid=uid).delete()
            raise ApiError(
                errors.UNAVAILABLE, "The run queue is unavailable, try again later"
            ) from exc
    return uid, False


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

    Each run's input goes as the text checked in its request (_new_run), on every
    database: what was checked is what is stored.

    On PostgreSQL: plain SQL with server-side parameters, in one round trip. The
    ORM's bulk_create (client-side binding, UNNEST arrays of quoted JSON text)
    cost about 4x the web process CPU per run (measured 105 vs 26 µs per row),
    and each round trip costs ~150 µs of CPU on our VMs (BEGIN and COMMIT are two).
    """
    ops = connection.ops
    table = ops.quote_name(Execution._meta.db_table)
    insert = (
        f"INSERT INTO {table} (uid, api_id, workflow_id, status, input, output, error, "  # noqa: S608
        "attempts, created_at, queued_at, started_at, finished_at) VALUES "
    )
    if connection.vendor != "postgresql":
        # One prepared statement for all (no limit on parameters), all or none
        # (no savepoint: as bulk_create did, within the caller's transaction).
        row = "(%s, %s, %s, 'queued', %s, NULL, '', 0, %s, %s, NULL, NULL)"
        rows = []
        for run in runs:
            at = ops.adapt_datetimefield_value(run.at)
            rows.append((run.uid, run.api_id, run.workflow_id, run.input, at, at))
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            cursor.executemany(insert + row, rows)
        return
    row = "(%s, %s, %s, 'queued', %s::jsonb, NULL, '', 0, %s, %s, NULL, NULL)"
    sql = insert + ", ".join([row] * len(runs))
    params = []
    for run in runs:
        params += (run.uid, run.api_id, run.workflow_id, run.input, run.at, run.at)
    if message is not None:
        # A data-modifying CTE always runs to completion, in the statement's
        # transaction: both rows are written, or neither.
        queue = connection.ops.quote_name(OrmQ._meta.db_table)
        sql = f"WITH runs AS ({sql}) INSERT INTO {queue} (key, payload, lock) VALUES (%s, %s, %s)"  # noqa: S608
        params += message
    _execute_server_side(sql, params)


_STEP_RUN_COLUMNS = (
    "execution_id, step_id, position, key, path, type, status, attempts, input, output, "
    "error, logs, started_at, finished_at, duration_ms"
)


def _insert_step_runs(step_runs: list[StepRun], *, as_they_finish: bool = False) -> None:
    """Write step records in one INSERT. On PostgreSQL plain SQL with server-side
    parameters, as for new runs (_insert_queued): Django's bulk_create cost about
    four times the CPU.

    ``as_they_finish``: the records of a run's effectful steps, written one by
    one as the steps end, commit without waiting for the WAL flush
    (synchronous_commit off for that statement's own transaction). They are
    visible to every other session at once, so a worker that dies next loses
    nothing; only a crash of PostgreSQL itself within its WAL writer delay (~0.2
    to 0.6 s) could lose one, and that step would then run again. The flush wait
    was most of a short run's time (docs/performance.md)."""
    if not step_runs:
        return
    if connection.vendor != "postgresql":
        StepRun.objects.bulk_create(step_runs)
        return
    table = connection.ops.quote_name(StepRun._meta.db_table)
    row = (
        "(%s::bigint, NULL::bigint, %s::integer, %s::varchar, %s::varchar, %s::varchar, "
        "%s::varchar, %s::smallint, %s::jsonb, %s::jsonb, %s::text, %s::text, "
        "%s::timestamptz, %s::timestamptz, %s::integer)"
    )
    values = ", ".join([row] * len(step_runs))
    sql = f"INSERT INTO {table} ({_STEP_RUN_COLUMNS}) "  # noqa: S608
    if as_they_finish:
        sql += (
            f"SELECT * FROM (VALUES {values}) AS v "  # noqa: S608
            "WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL"
        )
    else:
        sql += f"VALUES {values}"
    params = []
    for r in step_runs:
        params += (
            r.execution_id,
            r.position,
            r.key,
            r.path,
            r.type,
            r.status,
            r.attempts,
            None if r.input is None else _json(r.input),
            None if r.output is None else _json(r.output),
            r.error,
            r.logs,
            r.started_at,
            r.finished_at,
            r.duration_ms,
        )
    _execute_server_side(sql, params)


def _execute_server_side(sql: str, params: list) -> None:
    """Run one statement with server-side parameter binding (PostgreSQL), through
    Django's cursor wrapper: Django's error classes, query logging
    (assertNumQueries) and execute wrappers still apply."""
    import psycopg

    connection.ensure_connection()
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
    pending, ran = list(uids), []
    try:
        _run_batch(pending, ran, steal=steal, budget_end=budget_end)
    except BaseException:
        # A chunk failed (a bug, a database error): the message is acknowledged
        # (ack_failures) and no sweeper looks at `queued` runs with the ORM broker,
        # so this message's unclaimed runs get a new one (found by review).
        if pending:
            with contextlib.suppress(Exception):
                execution_enqueue(uids=pending)
        raise
    return ran


def _run_batch(pending: list[int], ran: list[int], *, steal: bool, budget_end: float) -> None:
    """execution_run_batch's loop; takes from ``pending`` as it claims."""
    state = _process()
    while pending or steal:
        if time.monotonic() > budget_end:
            if pending:
                logger.info("Batch over its time budget; re-queueing %s runs", len(pending))
                execution_enqueue(uids=list(pending))
                pending.clear()
            break
        started = time.monotonic()
        if pending:
            chunk = pending[: state.chunk_size]
            del pending[: state.chunk_size]
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


def _definition(execution: Execution) -> dict:
    """The definition the run pinned (immutable, so cached for good)."""
    if execution.version_id is None:
        # A workflow saved before versions existed (or edited without one): pin now.
        version = workflow_version_save(workflow=Workflow.objects.get(pk=execution.workflow_id))
        Execution.objects.filter(uid=execution.uid).update(version=version)
        execution.version_id = version.pk
    cache = _process().versions
    definition = cache.get(execution.version_id)
    if definition is None:
        if len(cache) > 1000:
            cache.clear()
        definition = WorkflowVersion.objects.values_list("definition", flat=True).get(
            pk=execution.version_id
        )
        cache[execution.version_id] = definition
    return definition


def _environment() -> dict:
    """Global environment variables (env.<name> in expressions), briefly cached."""
    state, now = _process(), time.monotonic()
    if state.env[0] <= now:
        values = dict(EnvironmentVariable.objects.values_list("name", "value"))
        state.env = (now + settings.IOLINKER_API_CACHE_SECONDS, values)
    return state.env[1]


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
            _run_one(execution, step_runs)
            finished.append(execution)
    except BaseException as exc:
        # django-q2's TimeoutException (a SystemExit), KeyboardInterrupt, a bug:
        # record what finished, fail the interrupted run, hand back the rest.
        for uid in started:
            execution = executions[uid]
            if execution not in finished:
                logger.error("Execution %s interrupted: %r", uid, exc)
                _finish(
                    execution,
                    engine.Outcome(
                        ExecutionStatus.FAILED,
                        error=f"The run was stopped by its worker: {exc!r}",
                    ),
                )
                finished.append(execution)
        _save(finished, step_runs)
        unstarted = [uid for uid in claimed if uid not in started]
        if unstarted:
            Execution.objects.filter(uid__in=unstarted).update(
                status=ExecutionStatus.QUEUED, lease_until=None
            )
            execution_enqueue(uids=unstarted)
        raise
    _save(finished, step_runs)


def _run_one(execution: Execution, step_runs: list[StepRun], *, depth: int = 0, control=None):
    """Run one claimed execution (its step records go to ``step_runs`` unless
    already written) and set its outcome on it, unsaved.

    Step results are durable as they finish: a step with side effects (anything
    not ``pure``) is written at once, so a run taken back from a dead worker or
    resumed after a delay replays it instead of repeating it. Pure steps of a
    short run are written with the run's end (repeating them is harmless).
    """
    if isinstance(execution.input, Unreadable):
        # Stored before intake refused such input (or by hand): fail it alone.
        error = f"The run's input cannot be read ({execution.input})"
        _finish(execution, engine.Outcome(ExecutionStatus.FAILED, error=error))
        return
    t0 = time.monotonic()
    own: list[StepRun] = []

    def record(step_run: StepRun, pure: bool) -> None:
        own.append(step_run)
        if not pure or time.monotonic() - t0 > STREAM_AFTER_S:
            _insert_step_runs(own, as_they_finish=not connection.in_atomic_block)
            own.clear()

    definition = _definition(execution)
    previous = {}
    if execution.attempts > 1 or depth:
        for step_run in StepRun.objects.filter(execution_id=execution.uid).order_by("position"):
            previous[step_run.path or step_run.key] = step_run
    # A child run in place shares its parent's cancel flag: cancelling either
    # stops both (the parent waits for the child).
    cancelled = run_watch_register(
        execution.uid, event=control.cancelled if control is not None else None
    )
    try:
        if execution.cancel_requested:
            cancelled.set()
        run_control = engine.Control(
            cancelled=cancelled,
            deadline=_deadline(execution, definition, control),
            timeout_seconds=definition.get("timeout_seconds"),
        )
        outcome = engine.Runner(
            execution,
            definition,
            record=record,
            previous=previous,
            control=run_control,
            env=_environment(),
            version_key=str(execution.version_id),
            children=_ChildRuns(depth + 1, cancelled),
        ).run()
    finally:
        run_watch_unregister(execution.uid)
    step_runs.extend(own)
    _finish(execution, outcome)


def _deadline(execution: Execution, definition: dict, parent=None) -> float | None:
    """The run's time limit on the monotonic clock, counted from its first start."""
    deadline = parent.deadline if parent is not None else None
    limit = definition.get("timeout_seconds")
    if limit:
        started = execution.started_at or timezone.now()
        left = (started + timedelta(seconds=limit) - timezone.now()).total_seconds()
        own = time.monotonic() + left
        deadline = own if deadline is None else min(deadline, own)
    return deadline


def _finish(execution: Execution, outcome: "engine.Outcome") -> None:
    execution.status = outcome.status
    execution.output = outcome.output
    execution.error = outcome.error
    execution.resume_at = outcome.resume_at
    execution.finished_at = None if outcome.resume_at else timezone.now()


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
            None if e.output is None else output_field.get_db_prep_value(e.output, connection),
            e.error,
            ops.adapt_datetimefield_value(e.finished_at),
            ops.adapt_datetimefield_value(e.resume_at),
            e.uid,
            e.attempts,
        )
        for e in finished
    ]
    with transaction.atomic():
        _insert_step_runs(step_runs)
        if rows:
            # Fenced by the claim (status and attempt): a worker that lost its run
            # (its lease lapsed and the reaper gave it to another worker, or ended
            # it) cannot overwrite what happened since (found by review).
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
            resume_times = {e.resume_at for e in finished if e.resume_at}
            if resume_times:
                _resume_schedule(resume_times)


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


def _resume_schedule(times: set) -> None:
    """A one-off django-q2 schedule at each wake-up time of waiting runs (its
    scheduler looks every 30 s; the every-minute sweeper is the fallback)."""
    from django_q.models import Schedule

    Schedule.objects.bulk_create(
        Schedule(
            func="workflows.tasks.resume_waiting_executions",
            schedule_type=Schedule.ONCE,
            repeats=-1,
            next_run=at,
        )
        for at in sorted(times)
    )


def execution_insert_and_queue(execution: Execution) -> Execution:
    """Write one new queued run (re-runs, sub-workflow children) and queue it: in
    one transaction with the ORM broker; with Redis the run is removed again when
    the push fails (as for triggers, see execution_queue)."""
    if execution.uid is None:
        try:
            execution.uid = next_uid()
        except UidUnavailable as exc:
            raise ApiError(errors.UNAVAILABLE) from exc
    execution.status = ExecutionStatus.QUEUED
    if _queue_is_transactional():
        with transaction.atomic():
            execution.save(force_insert=True)
            execution_enqueue(uids=[execution.uid])
        return execution
    execution.save(force_insert=True)
    try:
        execution_enqueue(uids=[execution.uid])
    except Exception as exc:
        execution.delete()
        raise ApiError(errors.UNAVAILABLE, "The run queue is unavailable, try again later") from exc
    return execution


class WorkflowDisabled(Exception):
    """A disabled workflow starts no new runs."""


def workflow_run(*, workflow: Workflow, body: dict) -> Execution:
    """Run a workflow by hand (the admin's "Run with a JSON input" action): a
    queued run whose trigger input is what a POST with ``body`` gives, marked by
    its user-agent. A disabled workflow refuses, as its APIs do."""
    if not workflow.enabled:
        raise WorkflowDisabled(f"Workflow {workflow.name!r} is disabled")
    trigger_input = {
        "method": "POST",
        "body": body,
        "query": {},
        "headers": {"user-agent": "iolinker admin"},
    }
    return execution_insert_and_queue(Execution(workflow=workflow, input=trigger_input))


def _ancestors(execution: Execution) -> int:
    """How many parent runs above this one (stops counting past the depth limit)."""
    count, parent_id = 0, execution.parent_id
    while parent_id is not None and count <= settings.IOLINKER_SUBWORKFLOW_DEPTH:
        count += 1
        parent_id = (
            Execution.objects.filter(uid=parent_id).values_list("parent_id", flat=True).first()
        )
    return count


class _ChildRuns:
    """How a subworkflow step runs its child (engine.Runner.run_child)."""

    def __init__(self, depth: int, cancelled):
        self.depth = depth
        self.cancelled = cancelled

    def __call__(self, *, parent, workflow, body, wait, path, control, timeout):
        child_workflow = Workflow.objects.filter(name=workflow).first()
        if child_workflow is None:
            raise StepError(f"no workflow named {workflow!r}")
        if not child_workflow.enabled:
            raise StepError(f"workflow {workflow!r} is disabled")
        trigger_input = {"method": "SUBWORKFLOW", "body": body, "query": {}, "headers": {}}
        if not wait and _ancestors(parent) >= settings.IOLINKER_SUBWORKFLOW_DEPTH:
            raise StepError(
                f"sub-workflows nest deeper than {settings.IOLINKER_SUBWORKFLOW_DEPTH} levels"
            )
        if not wait:
            child = execution_insert_and_queue(
                Execution(workflow=child_workflow, parent=parent, input=trigger_input)
            )
            return {"uid": str(child.uid)}
        if self.depth > settings.IOLINKER_SUBWORKFLOW_DEPTH:
            raise StepError(
                f"sub-workflows nest deeper than {settings.IOLINKER_SUBWORKFLOW_DEPTH} levels"
            )
        child = self._child(parent, child_workflow, path, trigger_input)
        resume_at = None
        if not child.is_final:
            step_runs: list[StepRun] = []
            if timeout is not None and (control.deadline is None or timeout < control.deadline):
                # The subworkflow step's own time limit bounds its child too.
                control = engine.Control(
                    cancelled=control.cancelled,
                    deadline=timeout,
                    timeout_seconds=control.timeout_seconds,
                )
            _run_one(child, step_runs, depth=self.depth, control=control)
            # A waiting child is resumed by its parent, never on its own schedule.
            resume_at, child.resume_at = child.resume_at, None
            _save([child], step_runs)
        if child.status == ExecutionStatus.WAITING:
            # The child waits for a delay: so does its parent, which resumes it.
            raise engine.waiting_until(resume_at or timezone.now())
        if child.status != ExecutionStatus.SUCCEEDED:
            raise StepError(
                f"sub-workflow {workflow!r} ({child.uid}) ended {child.status}: {child.error}",
                output={"uid": str(child.uid), "status": child.status, "error": child.error},
            )
        return child.output

    def _child(self, parent, child_workflow, path, trigger_input) -> Execution:
        """The child run of this step: the one an earlier attempt of the parent
        made if it is unfinished (resumed: it replays its finished steps) or
        succeeded; else a new one (a retry of the step runs the child again)."""
        child = Execution.objects.filter(parent=parent, parent_step=path).order_by("-uid").first()
        if child is not None and child.is_final and child.status != ExecutionStatus.SUCCEEDED:
            child = None
        now = timezone.now()
        if child is None:
            child = Execution(
                uid=next_uid(),
                workflow=child_workflow,
                parent=parent,
                parent_step=path,
                input=trigger_input,
                status=ExecutionStatus.RUNNING,
                created_at=now,
                queued_at=now,
                started_at=now,
                attempts=1,
            )
            child.save(force_insert=True)
        elif not child.is_final:
            Execution.objects.filter(uid=child.uid).update(
                status=ExecutionStatus.RUNNING, attempts=child.attempts + 1, resume_at=None
            )
            child.status, child.attempts = ExecutionStatus.RUNNING, child.attempts + 1
        if child.version_id is None:
            _definition(child)
        return child
