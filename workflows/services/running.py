"""Running one claimed execution: its pinned definition (cached for good), the
global environment variables (briefly cached), the engine's run with its cancel
flag and time limit, and the outcome set on the run; ``chunk_save`` then records
a chunk's step runs and outcomes in one transaction. Sub-workflow children run
through workflows/services/children.py.
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from workflows import engine
from workflows.definition import workflow_version_save
from workflows.models import (
    EnvironmentVariable,
    Execution,
    ExecutionStatus,
    StepRun,
    Workflow,
    WorkflowVersion,
)
from workflows.services import queueing, sql, transitions
from workflows.services.children import ChildRuns
from workflows.storedjson import Unreadable
from workflows.watch import run_watch_register, run_watch_unregister

logger = logging.getLogger("workflows.services")

# A run going longer than this has its finished steps written as it goes.
STREAM_AFTER_S = 1.0


def run_definition(execution: Execution) -> dict:
    """The definition the run pinned (immutable, so cached for good)."""
    if execution.version_id is None:
        # A workflow saved before versions existed (or edited without one): pin now.
        version = workflow_version_save(workflow=Workflow.objects.get(pk=execution.workflow_id))
        Execution.objects.filter(uid=execution.uid).update(version=version)
        execution.version_id = version.pk
    cache = queueing.process().versions
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
    state, now = queueing.process(), time.monotonic()
    if state.env[0] <= now:
        values = dict(EnvironmentVariable.objects.values_list("name", "value"))
        state.env = (now + settings.IOLINKER_API_CACHE_SECONDS, values)
    return state.env[1]


def run_one(execution: Execution, step_runs: list[StepRun], *, depth: int = 0, control=None):
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
        run_finish(execution, engine.Outcome(ExecutionStatus.FAILED, error=error))
        return
    t0 = time.monotonic()
    own: list[StepRun] = []

    def record(step_run: StepRun, pure: bool) -> None:
        own.append(step_run)
        if not pure or time.monotonic() - t0 > STREAM_AFTER_S:
            sql.step_runs_insert(own, as_they_finish=not connection.in_atomic_block)
            own.clear()

    definition = run_definition(execution)
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
            children=ChildRuns(depth + 1, cancelled),
        ).run()
    finally:
        run_watch_unregister(execution.uid)
    step_runs.extend(own)
    run_finish(execution, outcome)


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


def run_finish(execution: Execution, outcome: "engine.Outcome") -> None:
    execution.status = outcome.status
    execution.output = outcome.output
    execution.error = outcome.error
    execution.resume_at = outcome.resume_at
    execution.finished_at = None if outcome.resume_at else timezone.now()


def chunk_save(finished: list[Execution], step_runs: list[StepRun]) -> None:
    """One transaction for a chunk: its step runs and the runs' outcomes
    (transitions.executions_record, fenced by the claim), and a wake-up schedule
    for the runs that wait."""
    if not finished and not step_runs:
        return
    with transaction.atomic():
        sql.step_runs_insert(step_runs)
        if finished:
            finished = transitions.executions_record(finished)
            resume_times = {e.resume_at for e in finished if e.resume_at}
            if resume_times:
                _resume_schedule(resume_times)


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
