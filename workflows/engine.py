"""Runs a workflow's steps in order.

The engine itself does no I/O on our database: it hands each finished step's
record to ``record`` (the caller decides when to write them, see
services.execution_run_batch) and returns the run's outcome.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.utils import timezone

from workflows import steps as step_library
from workflows.models import Execution, Step, StepRun, StepRunStatus
from workflows.steps import StepContext, StepError

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    succeeded: bool
    output: object = None
    error: str = ""


def expression_names(trigger_input: dict) -> dict:
    """The names every expression can use (see workflows/templating.py)."""
    return {
        "input": trigger_input,
        "body": trigger_input.get("body", {}),
        "query": trigger_input.get("query", {}),
        "headers": trigger_input.get("headers", {}),
        "method": trigger_input.get("method", ""),
        "steps": {},
    }


def run_steps(
    execution: Execution, workflow_steps: list[Step], record: Callable[[StepRun], None]
) -> Outcome:
    """Run the steps; the output is the value of the last ``output`` step run,
    else the last step's output (None for a workflow without steps)."""
    data = expression_names(execution.input)
    output, has_output, last = None, False, None
    for step in workflow_steps:
        step_type = step_library.get(step.type)
        ctx = StepContext(
            data=data, execution_uid=execution.uid, step_key=step.key, step_id=step.pk
        )
        started_at, t0 = timezone.now(), time.perf_counter()
        resolved = result = None
        error = ""
        try:
            resolved = step_type.resolve_input(step.config, ctx)
            result = step_type.run(resolved, ctx)
        except StepError as exc:
            error, result = str(exc), exc.output
        except Exception as exc:
            logger.exception("Step %s of execution %s crashed", step.key, execution.uid)
            error = f"{type(exc).__name__}: {exc}"
        record(
            StepRun(
                execution=execution,
                step=step,
                position=step.position,
                key=step.key,
                type=step.type,
                status=StepRunStatus.FAILED if error else StepRunStatus.SUCCEEDED,
                input=resolved,
                output=result,
                error=error,
                logs="\n".join(ctx.logs),
                started_at=started_at,
                finished_at=timezone.now(),
                duration_ms=round((time.perf_counter() - t0) * 1000),
            )
        )
        if error:
            return Outcome(False, error=f"Step {step.key!r} ({step.type}) failed: {error}")
        data["steps"][step.key] = result
        last = result
        if step_type.sets_output:
            output, has_output = result, True
    return Outcome(True, output=output if has_output else last)
