"""The step library's contract: ``StepType`` (name, label, config schema, ``run``),
the ``StepContext`` a step runs with, ``StepError`` and the registry new step
modules add themselves to (``@register``)."""

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import jsonschema

from workflows import templating

REGISTRY: dict[str, "StepType"] = {}


class StepError(Exception):
    """A step failed; the message is shown on the step run and the execution.

    ``output`` is what the step produced before failing (e.g. an HTTP error
    response), recorded on its step run.
    """

    def __init__(self, message: str, *, output=None):
        super().__init__(message)
        self.output = output


class Stopped(Exception):
    """The run was cancelled or passed its time limit while a step waited."""


@dataclass
class StepContext:
    """What a running step can see: expression names, its limits, a place for its
    logs, and (through ``engine``) the ways a step may run other steps."""

    data: dict  # input, body, query, headers, method, vars, env, execution, steps
    execution_uid: int
    step_key: str
    logs: list[str] = field(default_factory=list)
    # Identifies this step of this workflow version (sandbox sessions are per step).
    step_id: int | str | None = None
    path: str = ""  # where in the run: "key", or "loop[2].key" inside loops
    deadline: float | None = None  # time.monotonic() by which this attempt must end
    cancelled: threading.Event = field(default_factory=threading.Event)
    engine: Any = None  # the engine's Runner (loop and subworkflow steps use it)

    def render(self, value):
        try:
            with templating.deadline(self.deadline):  # the step's timeout holds while rendering
                return templating.render(value, self.data)
        except templating.ExpressionError as exc:
            raise StepError(str(exc)) from exc

    def time_left(self, default: float) -> float:
        """A step's own timeout, cut to what its step and run limits leave."""
        if self.deadline is None:
            return default
        return max(0.001, min(default, self.deadline - time.monotonic()))

    def sleep(self, seconds: float) -> None:
        """Wait, waking up at once when the run is cancelled or out of time."""
        end = time.monotonic() + seconds
        if self.deadline is not None and self.deadline < end:
            self.cancelled.wait(max(0.0, self.deadline - time.monotonic()))
            raise StepError(f"the step's time limit ended a {seconds:g} s wait")
        if self.cancelled.wait(seconds):
            raise Stopped("cancelled")


class StepType:
    name: ClassVar[str]
    label: ClassVar[str]
    # JSON Schema of the step's config, checked when a workflow is saved.
    schema: ClassVar[dict] = {"type": "object"}
    # Config keys whose values are not templates (e.g. Python source).
    literal_keys: ClassVar[frozenset[str]] = frozenset()
    # The output of this step becomes the workflow's output.
    sets_output: ClassVar[bool] = False
    # No side effects and cheap: its record may be written with the run's end
    # (a resumed run simply runs it again). Others are recorded as they finish.
    pure: ClassVar[bool] = False
    # Its failure fails the run whatever the step's on-error policy (the fail step).
    fatal: ClassVar[bool] = False

    def validate(self, config) -> list[str]:
        validator = jsonschema.Draft202012Validator(self.schema)
        errors = [
            f"{'/'.join(map(str, e.absolute_path)) or 'config'}: {e.message}"
            for e in validator.iter_errors(config)
        ]
        if not errors and isinstance(config, dict):
            templated = {k: v for k, v in config.items() if k not in self.literal_keys}
            errors += templating.check(templated)
            errors += self.check(config)
        return errors

    def check(self, config: dict) -> list[str]:
        """Extra validation beyond the schema (override when needed)."""
        return []

    def targets(self, config: dict) -> list[str]:
        """Keys of steps this step may jump to (checked to be later steps)."""
        return []

    def sequences(self, config: dict) -> list[list[dict]]:
        """Lists of steps inside this step's config (a loop's body)."""
        return []

    def next_step(self, output) -> str:
        """The step to go on with after this output ("" for the usual next)."""
        return ""

    def hold_until(self, output) -> datetime | None:
        """A time before which the run must not go past this step (delay)."""
        return None

    def resolve_input(self, config: dict, ctx: StepContext):
        """The step's input as recorded on its step run: the config with templates rendered."""
        return {k: (v if k in self.literal_keys else ctx.render(v)) for k, v in config.items()}

    def run(self, resolved: dict, ctx: StepContext):
        raise NotImplementedError


def register(cls: type[StepType]) -> type[StepType]:
    if cls.name in REGISTRY:
        raise RuntimeError(f"Step type {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls()
    return cls
