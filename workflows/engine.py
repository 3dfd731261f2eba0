"""Runs a workflow version's steps: jumps, error policies, retries, limits.

The engine does no I/O on our database itself. The caller (workflows/services/running.py)
gives it the definition, the records of steps that finished in earlier attempts
of the same run (a run resumed after a delay or taken back from a dead worker
replays them instead of running them again), a ``record`` callback for each
finished step, and a ``control`` saying when to stop (cancel, time limit). It
returns the run's outcome.

Control flow: steps run in list order; a step's ``next`` or a condition's
choice jumps forward to a later step of the same list (or ``end``). A failing
step is retried ``retries`` times with exponential backoff, then its
``on_error`` policy applies: ``fail`` the run, ``continue`` with
``{"error": message}`` as its output, or ``branch`` to ``error_next``.
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from workflows import steps as step_library
from workflows.definition import END, StepSpec, specs
from workflows.models import Execution, ExecutionStatus, StepRun, StepRunStatus
from workflows.steps import StepContext, StepError
from workflows.steps.base import Stopped

logger = logging.getLogger(__name__)
MAX_RETRY_WAIT_S = 300.0


@dataclass
class Outcome:
    status: str
    output: object = None
    error: str = ""
    resume_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == ExecutionStatus.SUCCEEDED


class _End(Exception):
    """Ends the run early with an outcome (failure, cancel, time limit, a wait)."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.error)
        self.outcome = outcome


@dataclass
class Control:
    """When a run must stop: a cancel flag set from outside (the worker's watcher
    thread) and an overall deadline on the monotonic clock."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None
    timeout_seconds: int | None = None

    def check(self) -> None:
        if self.cancelled.is_set():
            raise _End(Outcome(ExecutionStatus.CANCELLED, error="The run was cancelled"))
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _End(
                Outcome(
                    ExecutionStatus.TIMED_OUT,
                    error=f"The run passed its {self.timeout_seconds} s time limit",
                )
            )


def storable(value):
    """A step's value as every database stores it: non-finite numbers become null,
    NUL characters and lone surrogates in text become U+FFFD (PostgreSQL's jsonb
    and text refuse them, SQLite takes them: a run must not behave differently, or
    fail to be recorded, by database). Found by review: `{{ body.v | float }}` with
    "nan", or an http answer with NaN, crashed the recording of a whole chunk."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {(_text(k) if isinstance(k, str) else k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def waiting_until(resume_at: datetime) -> _End:
    """Raised by a step to suspend the run until ``resume_at`` (a waiting child)."""
    return _End(Outcome(ExecutionStatus.WAITING, resume_at=resume_at))


def expression_names(trigger_input: dict, *, variables=None, env=None, uid=None) -> dict:
    """The names every expression can use (see workflows/templating.py)."""
    return {
        "input": trigger_input,
        "body": trigger_input.get("body", {}),
        "query": trigger_input.get("query", {}),
        "headers": trigger_input.get("headers", {}),
        "method": trigger_input.get("method", ""),
        "vars": variables or {},
        "env": env or {},
        "execution": {"uid": str(uid) if uid is not None else ""},
        "steps": {},
    }


class Runner:
    """One attempt at running one execution."""

    def __init__(
        self,
        execution: Execution,
        definition: dict,
        *,
        record: Callable[[StepRun, bool], None],
        previous: dict[str, StepRun] | None = None,
        control: Control | None = None,
        env: dict | None = None,
        version_key: str = "",
        children=None,
    ):
        self.execution = execution
        self.definition = definition
        self.record = record
        self.previous = previous or {}
        self.control = control or Control()
        self.env = env or {}
        self.version_key = version_key
        self.children = children  # runs sub-workflows (workflows/services/children.py)
        self.position = max((r.position for r in self.previous.values()), default=0)

    def run(self) -> Outcome:
        names = expression_names(
            self.execution.input,
            variables=self.definition.get("variables"),
            env=self.env,
            uid=self.execution.uid,
        )
        try:
            self.control.check()
            output = self.sequence(specs(self.definition["steps"]), names, prefix="")
        except _End as end:
            return end.outcome
        return Outcome(ExecutionStatus.SUCCEEDED, output=output)

    def sequence(self, step_specs: list[StepSpec], names: dict, *, prefix: str):
        """Run a list of steps; its output is the value of the last ``output`` step
        run, else the last step's output (None for no steps)."""
        index = {spec.key: i for i, spec in enumerate(step_specs)}
        output, has_output, last, i = None, False, None, 0
        while i < len(step_specs):
            spec = step_specs[i]
            step_type = step_library.get(spec.type)
            self.control.check()
            result, error = self._step(spec, step_type, names, prefix + spec.key)
            target = spec.next
            if error:
                if step_type.fatal or spec.on_error == "fail":
                    raise _End(
                        Outcome(
                            ExecutionStatus.FAILED,
                            error=f"Step {spec.key!r} ({spec.type}) failed: {error}",
                        )
                    )
                result = {"error": error}
                if spec.on_error == "branch":
                    target = spec.error_next
            else:
                if step_type.sets_output:
                    output, has_output = result, True
                target = step_type.next_step(result) or target
            names["steps"][spec.key] = result
            last = result
            if target == END:
                break
            i = index[target] if target else i + 1
        return output if has_output else last

    def _step(self, spec: StepSpec, step_type, names: dict, path: str) -> tuple[object, str]:
        """Run one step with its retries, record it; (output, error message)."""
        earlier = self.previous.get(path)
        if earlier is not None:
            # Finished in an earlier attempt of this run: replay, do not repeat it.
            self._hold(step_type, earlier.output)
            return earlier.output, earlier.error
        started_at, t0 = timezone.now(), time.perf_counter()
        logs: list[str] = []
        attempts = 0
        while True:
            attempts += 1
            ctx = self._context(spec, names, path, logs)
            resolved = result = None
            error = ""
            try:
                resolved = step_type.resolve_input(spec.config, ctx)
                result = storable(step_type.run(resolved, ctx))
            except StepError as exc:
                error, result = _text(str(exc)), storable(exc.output)
            except Stopped:
                error = "stopped: the run was cancelled"
            except _End as end:
                # Inside a loop, the run was cancelled, timed out or must wait. A
                # waiting loop is not recorded: it resumes, replaying its body.
                if end.outcome.status != ExecutionStatus.WAITING:
                    error = end.outcome.error
                    self._record(spec, path, started_at, t0, attempts, resolved, None, error, logs)
                raise
            except Exception as exc:
                logger.exception("Step %s of execution %s crashed", path, self.execution.uid)
                error = f"{type(exc).__name__}: {exc}"
            if error:
                self._record_if_stopping(
                    spec, path, started_at, t0, attempts, resolved, error, logs
                )
            if not error or step_type.fatal or attempts > spec.retries:
                break
            wait = min(spec.retry_interval * spec.retry_backoff ** (attempts - 1), MAX_RETRY_WAIT_S)
            logs.append(f"attempt {attempts} failed: {error}; retrying in {wait:g} s")
            self._wait(wait)
            # A retry runs the step's body again, not the records of the failed try.
            inner = path + "["
            self.previous = {k: v for k, v in self.previous.items() if not k.startswith(inner)}
        self._record(spec, path, started_at, t0, attempts, resolved, result, error, logs)
        if not error:
            self._hold(step_type, result)
        return result, error

    def _context(self, spec: StepSpec, names: dict, path: str, logs: list) -> StepContext:
        deadline = self.control.deadline
        if spec.timeout is not None:
            step_end = time.monotonic() + spec.timeout
            deadline = step_end if deadline is None else min(deadline, step_end)
        return StepContext(
            data=names,
            execution_uid=self.execution.uid,
            step_key=spec.key,
            logs=logs,
            step_id=f"{self.version_key}:{path}",
            path=path,
            deadline=deadline,
            cancelled=self.control.cancelled,
            engine=self,
        )

    def _record_if_stopping(self, spec, path, started_at, t0, attempts, resolved, error, logs):
        """A failure caused by a cancel or the run's time limit ends the run now."""
        try:
            self.control.check()
        except _End:
            self._record(spec, path, started_at, t0, attempts, resolved, None, error, logs)
            raise

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        if self.control.deadline is not None:
            end = min(end, self.control.deadline)
        self.control.cancelled.wait(max(0.0, end - time.monotonic()))
        self.control.check()

    def _hold(self, step_type, output) -> None:
        until = step_type.hold_until(output)
        now = timezone.now()
        if until is not None and until > now:
            self.control.check()  # a cancel (or the time limit) wins over waiting
            if self.control.deadline is not None:
                # Wake up when the run's time limit ends it, not days later.
                left = max(0.0, self.control.deadline - time.monotonic())
                until = min(until, now + timedelta(seconds=left))
            raise _End(Outcome(ExecutionStatus.WAITING, resume_at=until))

    def _record(self, spec, path, started_at, t0, attempts, resolved, result, error, logs):
        self.position += 1
        step_type = step_library.REGISTRY.get(spec.type)
        self.record(
            StepRun(
                execution=self.execution,
                position=self.position,
                key=spec.key,
                path=path,
                type=spec.type,
                status=StepRunStatus.FAILED if error else StepRunStatus.SUCCEEDED,
                attempts=attempts,
                input=storable(resolved),
                output=result,
                error=_text(error),
                logs=_text("\n".join(logs)),
                started_at=started_at,
                finished_at=timezone.now(),
                duration_ms=round((time.perf_counter() - t0) * 1000),
            ),
            bool(step_type and step_type.pure and not error),
        )

    # --- used by the loop and subworkflow steps --------------------------------

    def run_sequence(self, step_dicts: list[dict], names: dict, *, prefix: str):
        """A loop's body: a step failing in it is the loop step's error (so the
        loop's own retries and on-error policy apply)."""
        try:
            return self.sequence(specs(step_dicts), names, prefix=prefix)
        except _End as end:
            if end.outcome.status == ExecutionStatus.FAILED:
                raise StepError(end.outcome.error) from None
            raise

    def run_child(self, *, workflow: str, body, wait: bool, path: str, timeout: float | None):
        if self.children is None:
            raise StepError("sub-workflows cannot run here")
        return self.children(
            parent=self.execution,
            workflow=workflow,
            body=body,
            wait=wait,
            path=path,
            control=self.control,
            timeout=timeout,
        )
